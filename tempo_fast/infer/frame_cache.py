"""`FrameCache`: each video decoded and SAA-sampled once per `predict` run, its frames shared by all
of its queries (Charades-STA has ~2.4 queries per video, QVHighlights val ~1.0, the synthetic sets
several).

A query's frames depend only on the file and the sampling settings (frame count, SAA alpha and
probe rate, the decoder's resize target, device), never on the query text, so a cached `Frames` is
bitwise the one a fresh decode gives and predictions are the same with or without the cache
(tested).

    key        (real path, inode, size, mtime in ns, settings): a file rewritten, replaced or
               touched on disk gets a new key, so it is decoded again rather than served stale;
               an entry for an older version of the same file and settings is dropped when the
               new one is stored. A file that changes while it is being decoded is not stored.
    bound      LRU by bytes (frame data + pts) up to `max_bytes`; an entry larger than the whole
               bound is returned but not kept. max_bytes = 0: no cache (every query decodes).
    threads    `get` is thread-safe and single-flight: a query whose video another worker is
               decoding waits for that decode instead of starting its own; if that decode fails,
               the waiting query decodes itself (its own error record, as without the cache).
    errors     failures are not cached: every query of a bad video gets its own error record.

Callers get a shallow copy of the cached `Frames` (reassigning its fields leaves the cache alone);
the tensors are shared and must be treated as read-only (`build_prompt` only reads them).
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from typing import Callable


def file_stamp(path) -> tuple:
    """(real path, inode, size, mtime ns) of `path`; raises FileNotFoundError for a missing file."""
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)
    return real, st.st_ino, st.st_size, st.st_mtime_ns


def frames_bytes(frames) -> int:
    return sum(int(t.numel() * t.element_size()) for t in (frames.data, frames.pts))


class FrameCache:
    """A bounded, thread-safe, single-flight LRU of sampled `Frames` (module docstring)."""

    def __init__(self, max_bytes: int):
        if not (isinstance(max_bytes, int) and not isinstance(max_bytes, bool) and max_bytes >= 0):
            raise ValueError(f"FrameCache: max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict = OrderedDict()  # key -> (Frames, bytes), oldest first
        self._flight: dict = {}                     # key -> Event set when its decode ends
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path, settings: tuple, make: Callable[[], object]):
        """The frames of `path` under `settings` (a hashable tuple): cached, or `make()`'s result,
        stored for the next query. Raises what `make` raises (FileNotFoundError for a missing file)."""
        if self.max_bytes == 0:
            with self._lock:
                self.misses += 1
            return make()
        stamp = file_stamp(path)
        key = (*stamp, settings)
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return dataclasses.replace(entry[0])
                flight = self._flight.get(key)
                if flight is None:  # this thread decodes it
                    self._flight[key] = threading.Event()
                    self.misses += 1
                    break
            flight.wait()  # another worker is decoding this video: take its frames when it is done
            with self._lock:
                if key not in self._entries and key not in self._flight:
                    # that decode failed or was not stored: decode here (no second wait on it)
                    self._flight[key] = threading.Event()
                    self.misses += 1
                    break
        try:
            frames = make()
            if file_stamp(path) == stamp:  # unchanged while decoding: safe to serve again
                self._store(key, frames)
            return dataclasses.replace(frames)
        finally:
            with self._lock:
                self._flight.pop(key).set()

    def _store(self, key: tuple, frames) -> None:
        size = frames_bytes(frames)
        if size > self.max_bytes:
            return
        real, settings = key[0], key[-1]
        with self._lock:
            for old in [k for k in self._entries if k[0] == real and k[-1] == settings and k != key]:
                self.bytes -= self._entries.pop(old)[1]  # an older version of this file
            self._entries[key] = (frames, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                self.bytes -= self._entries.popitem(last=False)[1][1]

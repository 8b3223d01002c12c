"""Annotation loaders: QVHighlights JSONL and Charades-STA (JSON layout and the original text
lines) into one record type, `GroundingRecord`.

Layouts read:
- QVHighlights JSONL: one object per line with `qid`, `query`, `duration`, `vid`,
  `relevant_windows` ([[s, e], ...] seconds), optional `relevant_clip_ids`, `saliency_scores`.
  Extra keys are ignored, so the synthetic set (same layout) loads through the same function.
- Charades-STA JSON: `{video_id: {duration, timestamps: [[s, e], ...], sentences: [...]}}`, the
  i-th sentence belongs to the i-th window; record id `"{video_id}_{i}"`.
- Charades-STA text: lines `vid start end##sentence`; durations come from an optional mapping
  `{vid: seconds}`, otherwise they are unknown (`None`) and only `0 <= start <= end` is checked.
  Ids follow the JSON layout (`"{vid}_{i}"`, i counting that video's lines in file order).

Validation: a window must satisfy `0 <= start <= end <= duration`; starts below 0 and ends past
the duration by at most `tolerance` seconds are clipped (`clip=True`) or kept as annotated
(`clip=False`, e.g. for scoring against the raw annotation). Charades-STA ends overshoot the video
length by up to 1.5 s in 2,351 windows of the public files, hence its default tolerance of 2 s; its
train file also holds 4 reversed windows (videos LEOL6, IOL8Q, AKKWU), which a strict load rejects.

A bad record raises `AnnotationError` naming the file and line (or video id); with `strict=False`
it is skipped and counted: loaders return `Annotations`, a list of records with `skipped` and
`problems` (the message of every skipped record). Loading never needs the videos: `video_path`
is where the video would be (`videos_dir/vid` + the first of `VIDEO_EXTENSIONS` found there,
`.mp4` when none is), and `GroundingRecord.video_exists()` checks it.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")
RELEVANCE = ("relevant", "irrelevant", "partial")
QVH_TOLERANCE_S = 0.5
CHARADES_TOLERANCE_S = 2.0
_CHARADES_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s*##(.*)$")


class AnnotationError(ValueError):
    """A malformed annotation file or record; the message names the file and line or video id."""


@dataclass(frozen=True)
class GroundingRecord:
    """One (video, query) pair with its ground-truth windows in seconds."""

    id: int | str                                   # query id (QVHighlights qid, or "vid_i")
    video_id: str                                   # dataset video id
    video_path: Path | None                         # where the video is expected; None without videos_dir
    duration: float | None                          # seconds; None when the layout does not say
    query: str                                      # the sentence to ground
    windows: tuple[tuple[float, float], ...]        # ground-truth (start, end) seconds; empty if not relevant
    relevant_clip_ids: tuple[int, ...] = ()         # QVHighlights 2-second clip indices
    saliency_scores: tuple[tuple[int, ...], ...] = ()  # per relevant clip, one 0-4 score per annotator
    relevance: str = "relevant"                     # "relevant", "irrelevant" or "partial" (PIR)
    source_query: str | None = None                 # the original query a PIR sample was made from
    source_video_id: str | None = None              # for an irrelevant sample: the video the query came from

    def __post_init__(self):
        if self.relevance not in RELEVANCE:
            raise ValueError(f"GroundingRecord {self.id!r}: relevance {self.relevance!r} is not one of {RELEVANCE}")

    def video_exists(self) -> bool:
        """True when the video file is present on disk."""
        return self.video_path is not None and self.video_path.is_file()

    def to_json(self) -> dict:
        """The record in the QVHighlights layout (plus `relevance` and source fields when set)."""
        out = {"qid": self.id, "query": self.query, "duration": self.duration, "vid": self.video_id,
               "relevant_windows": [list(w) for w in self.windows]}
        if self.relevant_clip_ids:
            out["relevant_clip_ids"] = list(self.relevant_clip_ids)
            out["saliency_scores"] = [list(s) for s in self.saliency_scores]
        if self.relevance != "relevant":
            out["relevance"] = self.relevance
        for key in ("source_query", "source_video_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class Annotations(list):
    """The records of one file, with how many bad records a non-strict load skipped and why."""

    def __init__(self, records: Iterable[GroundingRecord] = (), *, path: Path | None = None,
                 problems: list[str] | None = None):
        super().__init__(records)
        self.path = path
        self.problems = list(problems or [])

    @property
    def skipped(self) -> int:
        return len(self.problems)


@dataclass
class _VideoIndex:
    """Resolves video ids to paths under one folder, listing the folder once."""

    videos_dir: Path | None
    names: set[str] = field(default_factory=set)

    def __post_init__(self):
        if self.videos_dir is not None:
            self.videos_dir = Path(self.videos_dir)
            if self.videos_dir.is_dir():
                self.names = {entry.name for entry in os.scandir(self.videos_dir)}

    def path(self, video_id: str) -> Path | None:
        if self.videos_dir is None:
            return None
        for ext in VIDEO_EXTENSIONS:
            if video_id + ext in self.names:
                return self.videos_dir / (video_id + ext)
        return self.videos_dir / (video_id + VIDEO_EXTENSIONS[0])


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _duration(value) -> float:
    duration = _number(value, "duration")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {value!r}")
    return duration


def _window(pair, duration: float | None, tolerance: float, clip: bool) -> tuple[float, float]:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"window must be [start, end], got {pair!r}")
    start, end = _number(pair[0], "window start"), _number(pair[1], "window end")
    if start > end:
        raise ValueError(f"window {pair!r} is reversed (start > end)")
    if start < -tolerance:
        raise ValueError(f"window {pair!r} starts before 0 by more than the tolerance {tolerance} s")
    if duration is not None and end > duration + tolerance:
        raise ValueError(f"window {pair!r} ends after the duration {duration} s by more than the "
                         f"tolerance {tolerance} s")
    if clip:
        start = max(start, 0.0)
        end = end if duration is None else min(end, duration)
    return start, end


def _query(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"query must be a non-empty string, got {value!r}")
    return value.strip()


def _fail(strict: bool, problems: list[str], message: str) -> None:
    if strict:
        raise AnnotationError(message)
    problems.append(message)


def _qvh_record(obj, index: _VideoIndex, tolerance: float, clip: bool) -> GroundingRecord:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("qid", "query", "duration", "vid", "relevant_windows") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    qid, vid = obj["qid"], obj["vid"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise ValueError(f"qid must be an int or string, got {qid!r}")
    if not isinstance(vid, str) or not vid:
        raise ValueError(f"vid must be a non-empty string, got {vid!r}")
    duration = _duration(obj["duration"])
    windows = obj["relevant_windows"]
    if not isinstance(windows, list):
        raise ValueError(f"relevant_windows must be a list, got {windows!r}")
    clip_ids = obj.get("relevant_clip_ids", [])
    scores = obj.get("saliency_scores", [])
    if not isinstance(clip_ids, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in clip_ids):
        raise ValueError(f"relevant_clip_ids must be a list of ints, got {clip_ids!r}")
    if not isinstance(scores, list) or len(scores) != len(clip_ids) or not all(
            isinstance(s, list) and all(isinstance(v, (int, float)) for v in s) for s in scores):
        raise ValueError(f"saliency_scores must be one list of numbers per relevant clip "
                         f"({len(clip_ids)} clips), got {scores!r}")
    return GroundingRecord(
        id=qid, video_id=vid, video_path=index.path(vid), duration=duration, query=_query(obj["query"]),
        windows=tuple(_window(w, duration, tolerance, clip) for w in windows),
        relevant_clip_ids=tuple(clip_ids), saliency_scores=tuple(tuple(s) for s in scores))


def load_qvhighlights(path: str | os.PathLike, videos_dir: str | os.PathLike | None = None, *,
                      strict: bool = True, tolerance: float = QVH_TOLERANCE_S, clip: bool = True) -> Annotations:
    """Read a QVHighlights-layout JSONL file (blank lines allowed)."""
    path = Path(path)
    index = _VideoIndex(videos_dir)
    records, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(_qvh_record(json.loads(line), index, tolerance, clip))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                _fail(strict, problems, f"{path}:{lineno}: {exc}")
    return Annotations(records, path=path, problems=problems)


def _charades_video(vid: str, entry, index: _VideoIndex, tolerance: float, clip: bool,
                    strict: bool, problems: list[str], where: str) -> list[GroundingRecord]:
    if not isinstance(entry, dict) or not {"duration", "timestamps", "sentences"} <= entry.keys():
        _fail(strict, problems, f"{where}: video {vid!r}: expected an object with duration, timestamps "
                                f"and sentences, got {str(entry)[:80]!r}")
        return []
    timestamps, sentences = entry["timestamps"], entry["sentences"]
    if not isinstance(timestamps, list) or not isinstance(sentences, list) or len(timestamps) != len(sentences):
        _fail(strict, problems, f"{where}: video {vid!r}: timestamps and sentences must be lists of the "
                                f"same length, got {str(timestamps)[:40]} and {str(sentences)[:40]}")
        return []
    try:
        duration = _duration(entry["duration"])
    except ValueError as exc:
        _fail(strict, problems, f"{where}: video {vid!r}: {exc}")
        return []
    records = []
    for i, (window, sentence) in enumerate(zip(timestamps, sentences)):
        try:
            records.append(GroundingRecord(
                id=f"{vid}_{i}", video_id=vid, video_path=index.path(vid), duration=duration,
                query=_query(sentence), windows=(_window(window, duration, tolerance, clip),)))
        except ValueError as exc:
            _fail(strict, problems, f"{where}: video {vid!r} sentence {i}: {exc}")
    return records


def _charades_json(path: Path, index: _VideoIndex, tolerance: float, clip: bool, strict: bool) -> Annotations:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object {{video_id: {{duration, timestamps, "
                              f"sentences}}}}, got a {type(data).__name__}")
    records, problems = [], []
    for vid, entry in data.items():
        records += _charades_video(vid, entry, index, tolerance, clip, strict, problems, str(path))
    return Annotations(records, path=path, problems=problems)


def _charades_text(path: Path, index: _VideoIndex, tolerance: float, clip: bool, strict: bool,
                   durations: Mapping[str, float] | None) -> Annotations:
    records, problems, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            match = _CHARADES_LINE.match(line.strip())
            try:
                if match is None:
                    raise ValueError(f"expected 'vid start end##sentence', got {line.strip()[:80]!r}")
                vid, start, end, sentence = match.groups()
                duration = None
                if durations is not None:
                    if vid not in durations:
                        raise ValueError(f"video {vid!r} has no entry in the durations mapping")
                    duration = _duration(durations[vid])
                window = _window((start, end), duration, tolerance, clip)
                i = seen.get(vid, 0)
                records.append(GroundingRecord(
                    id=f"{vid}_{i}", video_id=vid, video_path=index.path(vid), duration=duration,
                    query=_query(sentence), windows=(window,)))
                seen[vid] = i + 1
            except ValueError as exc:
                _fail(strict, problems, f"{path}:{lineno}: {exc}")
    return Annotations(records, path=path, problems=problems)


def load_charades(path: str | os.PathLike, videos_dir: str | os.PathLike | None = None, *,
                  durations: Mapping[str, float] | None = None, strict: bool = True,
                  tolerance: float = CHARADES_TOLERANCE_S, clip: bool = True) -> Annotations:
    """Read Charades-STA: the JSON layout (`.json`) or the original text lines (any other file)."""
    path = Path(path)
    index = _VideoIndex(videos_dir)
    if _first_char(path) == "{" and path.suffix != ".txt":
        return _charades_json(path, index, tolerance, clip, strict)
    return _charades_text(path, index, tolerance, clip, strict, durations)


def _first_char(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        while chunk := f.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    raise AnnotationError(f"{path}: the file is empty")


def load_annotations(path: str | os.PathLike, videos_dir: str | os.PathLike | None = None,
                     **kwargs) -> Annotations:
    """Read any supported layout, chosen from the content: one JSON object per line holding
    `qid`/`query` is QVHighlights JSONL, another JSON object is Charades-STA JSON, lines
    `vid start end##sentence` are Charades-STA text. Keyword arguments go to the loader."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        first_line = next((line for line in f if line.strip()), "").strip()
    if not first_line:
        raise AnnotationError(f"{path}: the file is empty")
    if first_line.startswith("{"):
        try:
            first = json.loads(first_line)
        except json.JSONDecodeError:
            first = None
        if isinstance(first, dict) and ("qid" in first or "query" in first):
            return load_qvhighlights(path, videos_dir, **kwargs)
        return load_charades(path, videos_dir, **kwargs)
    if _CHARADES_LINE.match(first_line):
        return load_charades(path, videos_dir, **kwargs)
    raise AnnotationError(f"{path}: unknown annotation layout; the first line {first_line[:80]!r} is "
                          "neither JSON nor a Charades-STA line 'vid start end##sentence'")

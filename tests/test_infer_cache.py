"""The frame cache of `predict`: the same predictions with and without it (every batch size and
worker count), each video decoded once, bounded LRU by bytes, a file changed on disk decoded again,
single-flight across threads, failures not cached, bad settings rejected."""
import json
import os
import threading
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast import infer  # noqa: E402
from tempo_fast.infer import FrameCache, InferConfig  # noqa: E402
from tempo_fast.video import Frames  # noqa: E402
from tiny_vl import clips, tiny_name, vl  # noqa: E402,F401 (clips, vl: fixtures)

SMALL = dict(num_frames=4, min_pixels=56 * 56, max_pixels=56 * 56, num_samples=2, max_new_tokens=8,
             workers=2, prefetch=2)


def _frames(nbytes: int, tag: int = 0) -> Frames:
    data = torch.full((nbytes - 8,), tag % 256, dtype=torch.uint8)
    return Frames(data=data, pts=torch.zeros(1, dtype=torch.float64), duration=1.0, fps=1.0, path=str(tag))


def _file(path, text: str):
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the cache alone


def test_hit_miss_and_shallow_copies(tmp_path):
    cache = FrameCache(10_000)
    path = _file(tmp_path / "a.mp4", "a")
    made = []

    def make():
        made.append(1)
        return _frames(1000, len(made))

    first = cache.get(path, ("s",), make)
    second = cache.get(path, ("s",), make)
    other = cache.get(path, ("t",), make)  # other settings: another entry
    assert len(made) == 2 and (cache.hits, cache.misses, len(cache)) == (1, 2, 2)
    assert torch.equal(first.data, second.data) and first is not second and int(other.data[0]) == 2
    second.pts = torch.ones(3)  # reassigning a field of the copy leaves the cached entry alone
    assert cache.get(path, ("s",), make).pts.shape == (1,)
    assert cache.bytes == 2000


def test_bounded_lru_by_bytes(tmp_path):
    cache = FrameCache(2500)
    paths = [_file(tmp_path / f"{i}.mp4", str(i)) for i in range(4)]
    for i in (0, 1):
        cache.get(paths[i], (), lambda i=i: _frames(1000, i))
    cache.get(paths[0], (), lambda: pytest.fail("a hit must not decode"))  # 0 is now the newest
    cache.get(paths[2], (), lambda: _frames(1000, 2))  # over 2500 bytes: 1, the least recent, goes
    assert len(cache) == 2 and cache.bytes == 2000 <= cache.max_bytes
    made = []
    cache.get(paths[1], (), lambda: made.append(1) or _frames(1000, 1))
    assert made == [1]
    big = cache.get(paths[3], (), lambda: _frames(3000, 3))  # larger than the bound: served, not kept
    assert big.data.numel() == 2992 and cache.bytes <= 2500 and len(cache) == 2
    off = FrameCache(0)
    for _ in range(2):
        off.get(paths[0], (), lambda: made.append(0) or _frames(1000))
    assert made == [1, 0, 0] and len(off) == 0


def test_changed_file_is_decoded_again(tmp_path):
    cache = FrameCache(10_000)
    path = _file(tmp_path / "a.mp4", "first")
    made = []

    def make():
        made.append(path.read_text())
        return _frames(1000, len(made))

    cache.get(path, (), make)
    _file(path, "second, longer")  # new size (and mtime)
    assert int(cache.get(path, (), make).data[0]) == 2
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same size, touched
    assert int(cache.get(path, (), make).data[0]) == 3
    assert made == ["first", "second, longer", "second, longer"]
    assert len(cache) == 1 and cache.bytes == 1000  # older versions of the file were dropped
    replaced = _file(tmp_path / "b.mp4", "second, longer")
    os.replace(replaced, path)  # a new file (inode) under the same name
    assert int(cache.get(path, (), make).data[0]) == 4
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.mp4", (), make)


def test_file_changing_during_decode_is_not_stored(tmp_path):
    cache = FrameCache(10_000)
    path = _file(tmp_path / "a.mp4", "first")

    def make():
        _file(path, "rewritten while decoding")
        return _frames(1000)

    cache.get(path, (), make)
    assert len(cache) == 0


def test_single_flight_and_failures_not_cached(tmp_path):
    cache = FrameCache(10_000)
    path = _file(tmp_path / "a.mp4", "a")
    started, release, made = threading.Event(), threading.Event(), []

    def slow():
        made.append(1)
        started.set()
        release.wait(10)
        return _frames(1000, 7)

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get(path, (), slow)))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.append(cache.get(path, (), slow)))
    second.start()
    time.sleep(0.05)  # the second thread is now waiting on the first one's decode
    release.set()
    first.join(10)
    second.join(10)
    assert made == [1] and len(results) == 2 and all(int(r.data[0]) == 7 for r in results)

    bad = _file(tmp_path / "bad.mp4", "x")
    calls = []

    def fail():
        calls.append(1)
        raise ValueError("corrupt")

    for _ in range(2):
        with pytest.raises(ValueError, match="corrupt"):
            cache.get(bad, (), fail)
    assert calls == [1, 1] and len(cache) == 1


def test_bad_sizes():
    with pytest.raises(ValueError, match="max_bytes"):
        FrameCache(-1)
    with pytest.raises(ValueError, match="frame_cache_mb"):
        InferConfig(frame_cache_mb=-1)


# ---------------------------------------------------------------- in predict


def _annotations(path, vids):
    with open(path, "w") as f:
        for qid, vid in enumerate(vids):
            f.write(json.dumps({"qid": qid, "query": f"the red circle moves {qid}", "duration": 3.0, "vid": vid,
                                "relevant_windows": [[0.5, 2.0]]}) + "\n")
    return path


def test_predict_same_with_and_without_cache(clips, vl, tmp_path):
    """Each video decoded once with the cache; the files equal the uncached run's at every batch
    size and worker count; the sampled frames of a hit equal a fresh decode's bit for bit."""
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "va", "vc", "vb", "vd", "va"])  # vd: missing
    texts = {}
    for size, workers, mb in ((1, 0, 0), (1, 0, 64), (3, 2, 64), (8, 2, 0), (8, 2, 64)):
        out = tmp_path / f"b{size}_w{workers}_c{mb}.jsonl"
        config = InferConfig(**{**SMALL, "batch_size": size, "workers": workers, "frame_cache_mb": mb})
        summary = infer.predict(ann, clips, model=vl, out=out, config=config, progress=False)
        assert (summary["queries"], summary["errors"]) == (7, 1)
        want = (3, 3) if mb else (6, 0)  # the missing video is never looked up
        assert (summary["videos_decoded"], summary["frames_cached"]) == want, (size, workers, mb)
        texts[(size, workers, mb)] = out.read_text()
    first = next(iter(texts.values()))
    assert [json.loads(line)["qid"] for line in first.splitlines()] == list(range(7))
    for key, text in texts.items():
        assert text == first, key

    config = InferConfig(**SMALL)
    cache = FrameCache(2**20)
    fresh = infer.sample_frames(vl, clips / "vb.mp4", config)
    for _ in range(2):
        got = infer.sample_frames(vl, clips / "vb.mp4", config, cache)
        assert torch.equal(got.data, fresh.data) and torch.equal(got.pts, fresh.pts)
        assert got.duration == fresh.duration
    assert (cache.hits, cache.misses) == (1, 1)
    other = infer.sample_frames(vl, clips / "vb.mp4", InferConfig(**{**SMALL, "num_frames": 6}), cache)
    assert other.data.shape[0] == 6 and cache.misses == 2  # other settings: decoded, not served


def test_workers_run_torch_on_one_thread(clips, vl, tmp_path, monkeypatch):
    """Prefetch workers use one intra-op thread each (an OpenMP team per worker on top of the
    model's oversubscribes the cores); the model's thread keeps its own setting."""
    from tempo_fast.infer import pipeline

    seen = []

    def prepare(vl, path, query, config, cache):
        seen.append(torch.get_num_threads())
        raise ValueError("not decoded in this test")

    monkeypatch.setattr(pipeline, "prepare", prepare)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the workers' 1 is theirs, not the default
    try:
        ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vc"])
        summary = infer.predict(ann, clips, model=vl, out=tmp_path / "p.jsonl", config=InferConfig(**SMALL),
                                progress=False)
        assert summary["errors"] == 3 and seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

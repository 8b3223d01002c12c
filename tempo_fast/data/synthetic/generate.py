"""The whole set on disk: plans for every clip, clips rendered in a process pool (resumable:
present files are kept), the split annotations, the facts sidecar and config.json; `load_facts`
reads the sidecar back."""
from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

from .config import SynthConfig, SynthResult
from .plan import annotation_rows, plan_video
from .render import _make_clips, require_ffmpeg
from .vocab import SPLITS, video_id

BATCH_CLIPS = 8  # clips per ffmpeg process
BATCH_BYTES = 256 << 20  # most raw frame bytes held by one batch


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_resume(out_dir: Path, config: SynthConfig) -> None:
    path = out_dir / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    new = config.content_fields()
    old.setdefault("event_scale", 1.0)  # folders written before the field existed
    old.setdefault("events_per_object", 0)
    differ = sorted(k for k in new if old.get(k) != new[k])
    if differ:
        raise ValueError(f"{out_dir} holds a synthetic set made with other settings "
                         f"({', '.join(f'{k}: {old.get(k)!r} there, {new[k]!r} now' for k in differ)}); "
                         "use another output folder or the same settings")


def generate_synthetic(out_dir: str | os.PathLike, config: SynthConfig | None = None, *,
                       progress: bool = True) -> SynthResult:
    """Render the synthetic set into `out_dir` (see the module docstring for the layout)."""
    start = time.perf_counter()
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    videos_dir = out_dir / "videos"
    if any(not (videos_dir / f"{video_id(config.seed, i)}.mp4").is_file() for i in range(config.num_videos)):
        require_ffmpeg()  # at once, before any work, and not as a traceback from a pool worker
    videos_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, config)
    _write_atomic(out_dir / "config.json", json.dumps(config.content_fields(), indent=1) + "\n")
    for leftover in videos_dir.glob(".*.tmp.mp4"):  # partial files of an interrupted run
        leftover.unlink()
    plans = [plan_video(config, i) for i in range(config.num_videos)]
    todo = [p for p in plans if not (videos_dir / f"{p['vid']}.mp4").is_file()]
    workers = min(config.workers or os.cpu_count() or 1, max(1, len(todo)))
    frame_bytes = config.width * config.height * 3 * config.fps * config.max_seconds
    per_batch = max(1, min(BATCH_CLIPS, int(BATCH_BYTES // frame_bytes), math.ceil(len(todo) / workers)))
    batches = [todo[i:i + per_batch] for i in range(0, len(todo), per_batch)]
    bar = _progress(len(todo), progress)
    if workers == 1:
        for batch in batches:
            _make_clips(batch, str(videos_dir), config.crf)
            bar.update(len(batch))
    else:
        # fork on Linux: callers need no `if __name__ == "__main__"` guard, and workers touch only
        # numpy and ffmpeg, none of the parent's threads or torch state
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(_make_clips, batch, str(videos_dir), config.crf) for batch in batches]
            for future in cf.as_completed(futures):
                bar.update(len(future.result()))
    bar.close()
    num_queries = 0
    for split in SPLITS:
        rows = [row for p in plans if p["split"] == split for row in annotation_rows(p)]
        num_queries += len(rows)
        _write_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_atomic(out_dir / "facts.jsonl", "".join(json.dumps(p) + "\n" for p in plans))
    return SynthResult(out_dir, len(plans), len(todo), len(plans) - len(todo), num_queries,
                       time.perf_counter() - start)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="clip", desc="synth")


def load_facts(path: str | os.PathLike) -> dict[str, dict]:
    """The sidecar of a synthetic set (`facts.jsonl`, or the folder holding it): {vid: plan}."""
    path = Path(path)
    if path.is_dir():
        path = path / "facts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic facts file at {path} (expected facts.jsonl from generate_synthetic)")
    with open(path, encoding="utf-8") as f:
        return {plan["vid"]: plan for plan in map(json.loads, filter(str.strip, f))}

"""Throughput of the synthetic grounding set generator: clips/s of `generate_synthetic` with the
process pool (one worker per core) and in one process, plus the numpy renderer alone in frames/s.

Each provider renders the same clips into a fresh folder; the first clip is decoded with
torchcodec (when installed) and checked against its plan before anything is timed.

    python benchmarks/bench_synthetic.py                      # 48 clips, 64x64, 8 fps, 8-16 s
    python benchmarks/bench_synthetic.py --num-videos 300     # the default set size
    python benchmarks/bench_synthetic.py --size 320x240 --num-videos 64
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_rows, device_name, print_table  # noqa: E402
from tempo_fast.data.synthetic import SynthConfig, generate_synthetic, load_facts, plan_video, render_frames  # noqa: E402


def _check(out: Path) -> None:
    facts = load_facts(out)
    vid, plan = next(iter(facts.items()))
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        print("torchcodec not installed: the decode check is skipped")
        return
    decoder = VideoDecoder(str(out / "videos" / f"{vid}.mp4"))
    meta = decoder.metadata
    if (meta.num_frames, meta.width, meta.height) != (plan["num_frames"], plan["width"], plan["height"]):
        raise SystemExit(f"bench_synthetic: {vid} decodes to {meta.num_frames} frames of {meta.width}x{meta.height}, "
                         f"planned {plan['num_frames']} of {plan['width']}x{plan['height']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-videos", type=int, default=48, help="clips per provider")
    parser.add_argument("--size", default="64x64", help="frame size WxH")
    parser.add_argument("--fps", type=int, default=8, help="frames per second")
    parser.add_argument("--seconds", default="8-16", help="clip length range A-B")
    parser.add_argument("--workers", type=int, default=0, help="pool size (0: one per core)")
    parser.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.lower().split("x"))
    lo, hi = map(float, args.seconds.split("-"))
    workers = args.workers or os.cpu_count() or 1
    base = dict(num_videos=args.num_videos, width=width, height=height, fps=args.fps,
                min_seconds=lo, max_seconds=hi)
    shape = f"{args.num_videos}x{width}x{height}@{args.fps}fps,{args.seconds}s"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for provider, n_workers in ((f"pool{workers}", workers), ("serial", 1)):
            out = Path(tmp) / provider
            result = generate_synthetic(out, SynthConfig(**base, workers=n_workers), progress=False)
            _check(out)
            rows.append({"what": "synthetic", "provider": provider, "mode": "generate", "shape": shape,
                         "dtype": "uint8", "metric": "clips_per_s", "median": result.clips_per_second,
                         "unit": "clips/s", "device": device_name("cpu")})
    config = SynthConfig(**base)
    plans = [plan_video(config, i) for i in range(min(args.num_videos, 16))]
    start = time.perf_counter()
    frames = sum(len(render_frames(p)) for p in plans)
    rows.append({"what": "synthetic", "provider": "numpy-render", "mode": "render", "shape": shape,
                 "dtype": "uint8", "metric": "frames_per_s", "median": frames / (time.perf_counter() - start),
                 "unit": "frames/s", "device": device_name("cpu")})
    print_table(rows)
    if not args.no_csv:
        print(f"rows appended to {append_rows('synthetic.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

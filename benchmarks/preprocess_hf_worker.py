"""transformers' Qwen2VLVideoProcessor timed on saved frames: the reference provider of
bench_preprocess.py, run by it in the second venv (torch 2.14.1 + torchvision 0.29.1 +
transformers 5.23.0; torchvision cannot live in the main environment). It imports only torch and
transformers, so it runs from any environment that has them.

    .venv-tv/bin/python benchmarks/preprocess_hf_worker.py FRAMES.pt OUT.pt --min-pixels N --max-pixels N [--threads N]

FRAMES.pt holds the uint8 [T, C, H, W] frames (strides kept); OUT.pt gets the processor's
pixel_values_videos and video_grid_thw (for the caller's equality check). Then it serves timings,
so the caller can interleave them with its own providers under the same machine load: stdout gets
one JSON line (thread count, versions), then for every "run" line read on stdin it times one
processor call and writes its wall time in ms; it exits at the end of stdin.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("frames")
    p.add_argument("out")
    p.add_argument("--min-pixels", type=int, required=True)
    p.add_argument("--max-pixels", type=int, required=True)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    frames = torch.load(args.frames)
    processor = Qwen2VLVideoProcessor(min_pixels=args.min_pixels, max_pixels=args.max_pixels)

    def run():
        # cap_pixels_per_frame=False: transformers 5.23's default behaviour, without its warning
        return processor(videos=[frames], return_tensors="pt", cap_pixels_per_frame=False)

    out = run()
    torch.save({"pixel_values_videos": out["pixel_values_videos"], "video_grid_thw": out["video_grid_thw"]},
               args.out)
    del out
    run()  # warm-up
    versions = {n: metadata.version(n) for n in ("torch", "torchvision", "transformers")}
    print(json.dumps({"threads": torch.get_num_threads(), "versions": versions}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            raise SystemExit(f"preprocess_hf_worker: expected 'run', got {line.strip()!r}")
        start = time.perf_counter()
        run()
        print(f"{(time.perf_counter() - start) * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()

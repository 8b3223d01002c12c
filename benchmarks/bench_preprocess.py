"""Video preprocessing: `video_inputs` (native op and torch twin) against transformers'
Qwen2VLVideoProcessor, on decoded frames, in frames/s and GB/s next to the memory bandwidth.

1. An H.264 clip (--frames frames at --resolution, 8 fps, testsrc2) is made with ffmpeg and
   decoded with tempo_fast.video.decode (torchcodec's channels-last [T, C, H, W] frames).
2. Providers, all at the same pixel budget (default: Qwen's video default, 720p -> 560x1008):
   - native: video_inputs(backend="native"), the fused tempo_fast._C op;
   - torch: video_inputs(backend="torch"), the pure-torch twin;
   - transformers: Qwen2VLVideoProcessor on the same frames, run by
     benchmarks/preprocess_hf_worker.py in the second venv (--tv-python, default .venv-tv: torch
     2.14.1 + torchvision 0.29.1, which cannot live in the main environment); skipped with a
     note when that venv is absent.
   Checked first: native and torch bit-equal, and both bit-equal to the processor's output.
3. Timing: rounds of one call per provider, interleaved (the processor in its own process,
   answering one call per request), so every provider sees the same machine load; the median
   over --reps rounds, and the speedup as the median of per-round ratios. GB/s = (uint8 frames
   read + pixel_values written) / time, against the copy bandwidth (common.memory_bandwidth_gbs:
   read + write) measured in the same run. The spread (min-max over rounds) is printed.

    python benchmarks/bench_preprocess.py                        # 32 x 720p, default budget
    python benchmarks/bench_preprocess.py --frames 16 --resolution 360p

Rows go to benchmarks/results/preprocess.csv.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESOLUTIONS = {"180p": (180, 320), "360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


def parse(argv):
    from tempo_fast.video.preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int, default=32, help="decoded frames preprocessed per call")
    p.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="720p")
    p.add_argument("--min-pixels", type=int, default=VIDEO_MIN_PIXELS)
    p.add_argument("--max-pixels", type=int, default=VIDEO_MAX_PIXELS)
    p.add_argument("--reps", type=int, default=7, help="timed rounds (one call per provider each)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for every provider (0: torch's default)")
    p.add_argument("--tv-python", default=str(ROOT / ".venv-tv" / "bin" / "python"),
                   help="python of the venv with torchvision + transformers (the processor)")
    p.add_argument("--clip-dir", default=str(Path(tempfile.gettempdir()) / "tempo_fast_bench"),
                   help="where generated clips are kept (reused when present)")
    p.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    return p.parse_args(argv)


def decoded_frames(args):
    from tempo_fast.video import clips, decode

    height, width = RESOLUTIONS[args.resolution]
    path = Path(args.clip_dir) / f"testsrc_{args.resolution}_{args.frames}f.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        clips.make_clip(tmp, width=width, height=height, fps=8, seconds=args.frames / 8)
        tmp.rename(path)
    frames = decode(path)
    if frames.data.shape[0] != args.frames:
        raise AssertionError(f"{path}: decoded {frames.data.shape[0]} frames, expected {args.frames}")
    return frames


class Processor:
    """The processor worker in the second venv: its output once, then one timed call per `time()`."""

    def __init__(self, python: str, frames: torch.Tensor, args, workdir: Path):
        frames_path, out_path = workdir / "frames.pt", workdir / "processor_out.pt"
        torch.save(frames, frames_path)
        self.proc = subprocess.Popen(
            [python, "-P", str(ROOT / "benchmarks" / "preprocess_hf_worker.py"), str(frames_path), str(out_path),
             "--min-pixels", str(args.min_pixels), "--max-pixels", str(args.max_pixels),
             "--threads", str(torch.get_num_threads())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the processor worker ({python}) exited with {self.proc.wait()}")
        self.info = json.loads(line)
        self.output = torch.load(out_path)

    def time_ms(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    from tempo_fast import _native
    from tempo_fast.video import video_inputs

    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = decoded_frames(args)
    budget = dict(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    providers = {"torch": lambda: video_inputs(frames, backend="torch", **budget)}
    if _native.has_kernel("preprocess_video", "cpu"):
        providers["native"] = lambda: video_inputs(frames, backend="native", **budget)
    else:
        print(f"native: skipped ({_native.reason() or 'no preprocess_video CPU kernel'})")

    ref = providers["torch"]()
    pixels = ref["pixel_values_videos"]
    for name, fn in providers.items():
        if not torch.equal(fn()["pixel_values_videos"], pixels):
            raise AssertionError(f"video_inputs backend={name} differs from the torch twin")
    processor = None
    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.tv_python).exists():
            processor = Processor(args.tv_python, frames.data, args, Path(tmp))
            if not (torch.equal(processor.output["pixel_values_videos"], pixels)
                    and processor.output["video_grid_thw"].tolist() == ref["video_grid_thw"].tolist()):
                raise AssertionError("video_inputs differs from transformers' processor on these frames")
            print(f"transformers: equal to video_inputs; worker {processor.info}")
        else:
            print(f"transformers: skipped (no second venv at {args.tv_python}; .ci/run makes it)")

        bandwidth = common.memory_bandwidth_gbs("cpu")
        times = {name: [] for name in [*providers, *(["transformers"] if processor else [])]}
        for fn in providers.values():  # warm-up
            fn()
        for _ in range(args.reps):
            for name, fn in providers.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
            if processor:
                times["transformers"].append(processor.time_ms())
        if processor:
            processor.close()

    t, c, h, w = frames.data.shape
    size = tuple(int(v) * 14 for v in ref["video_grid_thw"][0, 1:])
    label = f"{t}x{h}x{w}->{size[0]}x{size[1]}"
    nbytes = frames.data.numel() + pixels.numel() * pixels.element_size()
    dev = common.device_name("cpu")
    base = dict(what="video_inputs", mode=f"cpu,threads={torch.get_num_threads()}", shape=label,
                dtype="float32", device=dev)
    rows = [dict(what="memory", provider="copy", mode="read+write", shape="256MiB", dtype="uint8",
                 metric="bandwidth", median=bandwidth, unit="GB/s", device=dev)]
    hf_versions = " ".join(f"{k}={v}" for k, v in processor.info["versions"].items()) if processor else ""
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:>12}: median {ms:8.1f} ms  (min {min(ts):.1f}, max {max(ts):.1f} over {len(ts)} rounds)")
        where = dict(base, provider=name, **({"versions": hf_versions} if name == "transformers" else {}))
        rows += [dict(where, metric="time", median=ms, unit="ms"),
                 dict(where, metric="frames_per_s", median=t / (ms * 1e-3), unit="frames/s"),
                 dict(where, metric="throughput", median=nbytes / (ms * 1e-3) / 1e9, unit="GB/s"),
                 dict(where, metric="of_bandwidth", median=nbytes / (ms * 1e-3) / 1e9 / bandwidth, unit="fraction")]
    if "transformers" in times:
        # per-round ratios: the two calls of a round ran back to back, under the same load
        for name in providers:
            ratios = [hf / mine for hf, mine in zip(times["transformers"], times[name])]
            ratio = statistics.median(ratios)
            rows.append(dict(base, provider=f"{name}/transformers", metric="speedup", median=ratio, unit="x"))
            print(f"{name}: {ratio:.2f}x transformers' processor (median of per-round ratios; "
                  f"min {min(ratios):.2f}, max {max(ratios):.2f})")
    common.print_table([{k: v for k, v in r.items() if k != "versions"} for r in rows])
    if not args.no_csv:
        print(f"rows appended to {common.append_rows('preprocess.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SAA cost: the `saa_scores` op in GB/s against the memory bandwidth, and the whole
`saa_sample` against plain uniform sampling of the same number of frames.

1. saa_scores on a probe-sized batch (T x 64 x 64 x 3), a model-input-sized one (256 x 224 x
   224 x 3) and a full-size one (frames of --resolution): frames/s and GB/s = bytes read
   (T*H*W*C) / time, for the torch reference, numba (CPU), native (the tempo_fast._C extension,
   CPU and CUDA, where built) and Triton (CUDA only: the interpreter is no speed measure), next
   to the device's copy bandwidth measured in the same run (common.memory_bandwidth_gbs, read +
   write bytes; `fraction` rows = GB/s / that bandwidth), and native/numba, native/triton
   ratios. Every provider's result is checked bit-identical to the reference first.
2. On a generated still-then-busy clip (--seconds at --resolution, 30 fps, H.264):
   `saa_sample(path, N)` (probe decode at 4 fps and 64x64, scores, placement, decode of N frames)
   against uniform sampling (`decode(path, timestamps=uniform_times(duration, N))`, header
   probe included); the ratio saa/uniform is the price of adaptivity. Checked first: SAA with
   alpha=0 returns exactly the uniform frames.

    python benchmarks/bench_saa.py                                   # CPU, short (< 1 min)
    python benchmarks/bench_saa.py --seconds 150 --resolution 720p   # the full target
    python benchmarks/bench_saa.py --device cuda --seconds 150 --resolution 720p

Rows go to benchmarks/results/saa.csv.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

RESOLUTIONS = {"180p": (180, 320), "360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--probe-frames", type=int, default=600, help="T of the probe-sized batch (150 s at 4 fps)")
    p.add_argument("--input-frames", type=int, default=256, help="T of the 224x224 batch")
    p.add_argument("--full-frames", type=int, default=96,
                   help="T of the full-size batch (96 x 360p = 66 MB: larger than the CPU caches)")
    p.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="360p")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the generated clip")
    p.add_argument("--num-frames", type=int, default=32, help="frames sampled from the clip")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--clip-dir", default=str(Path(tempfile.gettempdir()) / "tempo_fast_bench"),
                   help="where generated clips are kept (reused when present)")
    p.add_argument("--skip-sample", action="store_true", help="only the saa_scores part")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per provider (CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, the native kernel and numba (default: as set up)")
    p.add_argument("--no-csv", action="store_true", help="print only, append no rows")
    return p.parse_args(argv)


def bench_scores(device: torch.device, shapes, reps: int = 7) -> list[dict]:
    from tempo_fast import _native
    from tempo_fast.ops.saa_scores import saa_scores, saa_scores_ref

    providers = ["torch"]
    if device.type == "cpu":
        providers.append("numba")
    if device.type == "cuda":
        providers.append("triton")
    if _native.has_kernel("saa_abs_diff_sums", device.type):
        providers.append("native")
    else:
        print(f"native: not measured ({_native.reason() or 'no ' + device.type + ' kernel in tempo_fast._C'})")
    dev = common.device_name(device)
    bandwidth = common.memory_bandwidth_gbs(device)
    rows = [dict(what="memory", provider="copy", mode="read+write", shape="256MiB", dtype="uint8",
                 metric="bandwidth", median=bandwidth, unit="GB/s", device=dev)]
    for shape in shapes:
        frames = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
        expected = saa_scores_ref(frames)
        label = "x".join(map(str, shape))
        base = dict(what="saa_scores", mode="fwd", shape=label, dtype="uint8", device=dev)
        for provider in providers:
            fn = (lambda: saa_scores_ref(frames)) if provider == "torch" else \
                (lambda p=provider: saa_scores(frames, backend=p))
            got = fn()
            if not torch.equal(got, expected):
                raise AssertionError(f"saa_scores {provider} differs from the reference at {label}")
            ms = common.time_ms(fn, device, reps=reps if provider != "torch" else min(reps, 3))
            gbs = frames.numel() / (ms * 1e-3) / 1e9
            tag = dict(base, provider=provider)
            if provider == "native" and device.type == "cpu":
                tag["mode"] = f"fwd isa={torch.ops.tempo_fast.cpu_isa()} threads={torch.get_num_threads()}"
            rows += [dict(tag, metric="time", median=ms, unit="ms"),
                     dict(tag, metric="throughput", median=gbs, unit="GB/s"),
                     dict(tag, metric="frames", median=shape[0] / (ms * 1e-3), unit="frames/s"),
                     dict(tag, metric="fraction", median=gbs / bandwidth, unit="of copy GB/s")]
        del frames
    by = {(r["provider"], r["shape"]): r["median"] for r in rows if r.get("metric") == "time"}
    for shape in {r["shape"] for r in rows if r["what"] == "saa_scores"}:
        for other in ("numba", "triton"):
            if ("native", shape) in by and (other, shape) in by:
                rows.append(dict(what="saa_scores", provider=f"native/{other}", mode="fwd", shape=shape, dtype="uint8",
                                 metric="speedup", median=by[(other, shape)] / by[("native", shape)], unit="x", device=dev))
    return rows


def make_clip(args) -> str:
    from tempo_fast.video.clips import make_still_then_busy

    height, width = RESOLUTIONS[args.resolution]
    path = Path(args.clip_dir) / f"still_busy_{args.resolution}_{args.seconds:g}s.mp4"
    if not path.exists():
        half = args.seconds / 2
        tmp = path.with_suffix(".part.mp4")
        make_still_then_busy(tmp, half, half, width=width, height=height, fps=30)
        tmp.rename(path)
    return str(path)


def bench_sample(args, device: torch.device) -> list[dict]:
    from tempo_fast.video.decode import decode, probe
    from tempo_fast.video.saa import saa_sample, uniform_times

    path = make_clip(args)
    n = args.num_frames

    def uniform():
        return decode(path, timestamps=uniform_times(probe(path).duration, n), device=device)

    def adaptive():
        return saa_sample(path, n, alpha=args.alpha, device=device)

    flat = saa_sample(path, n, alpha=0.0, device=device)
    if not torch.equal(flat.data, uniform().data):
        raise AssertionError("saa_sample with alpha=0 does not return the uniform frames")
    dev = common.device_name(device)
    label = f"{args.resolution}x{args.seconds:g}s,N={n}"
    t_uniform = common.time_ms(uniform, device, warmup=1, reps=5)
    t_saa = common.time_ms(adaptive, device, warmup=1, reps=5)
    base = dict(what="saa_sample", mode=f"alpha={args.alpha}", shape=label, dtype="uint8", device=dev)
    return [dict(base, provider="uniform", metric="time", median=t_uniform, unit="ms"),
            dict(base, provider="saa", metric="time", median=t_saa, unit="ms"),
            dict(base, provider="saa/uniform", metric="ratio", median=t_saa / t_uniform, unit="x")]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import numba
            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
    height, width = RESOLUTIONS[args.resolution]
    shapes = [(args.probe_frames, 64, 64, 3), (args.input_frames, 224, 224, 3), (args.full_frames, height, width, 3)]
    rows = bench_scores(device, shapes, reps=args.reps)
    if not args.skip_sample:
        rows += bench_sample(args, device)
    common.print_table(rows)
    by = {(r["what"], r["provider"], r["shape"], r["metric"]): r["median"] for r in rows}
    for shape in {r["shape"] for r in rows if r["what"] == "saa_scores"}:
        ref = by.get(("saa_scores", "torch", shape, "throughput"))
        for provider in ("numba", "triton", "native"):
            fast = by.get(("saa_scores", provider, shape, "throughput"))
            if fast and ref:
                print(f"saa_scores {shape}: {provider} {fast / ref:.1f}x the torch reference")
    for r in rows:
        if r["metric"] == "speedup":
            print(f"saa_scores {r['shape']}: {r['provider']} = {r['median']:.2f}x")
    if not args.no_csv:
        print(f"rows appended to {common.append_rows('saa.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

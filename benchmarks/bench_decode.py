"""Video decode throughput (frames/s): tempo_fast.video.decode against PyAV.

Providers: torchcodec on the CPU (seek_mode exact and approximate), torchcodec on CUDA (NVDEC,
when its CUDA build is installed), DALI (when nvidia-dali is installed) and PyAV as a baseline.
Modes: "all" decodes the whole video; "ts32" decodes the 32 frames shown at 32 uniformly spaced
times (what a sampler such as SAA asks for). Clips are made by ffmpeg (tempo_fast.video.clips):
testsrc2 at 30 fps, H.264 and HEVC, at 360p/720p/1080p. Before timing, every provider's pts are
checked against the known frame times (frame k at k/30 s).

    python benchmarks/bench_decode.py                      # CPU: 2 s clips at 360p
    python benchmarks/bench_decode.py --seconds 10 --resolutions 360p 720p 1080p --device cuda

Rows go to benchmarks/results/decode.csv (metric "frames_per_s", shape "<res>-<codec>-<seconds>s").
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import append_rows, device_name, print_table, time_ms  # noqa: E402
from tempo_fast.video import clips  # noqa: E402
from tempo_fast.video.decode import BackendUnavailable, decode  # noqa: E402

FPS = 30
RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def pyav_decode(path: str, times: list[float] | None, threads: int):
    """Baseline: PyAV, sequential decode to RGB (seeking once to the first wanted time), with the
    same FFmpeg thread count as the torchcodec providers (0: FFmpeg decides)."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        out, pts = [], []
        wanted = sorted(times) if times is not None else None
        if wanted:
            container.seek(int(wanted[0] / stream.time_base), stream=stream, backward=True)
        i = 0
        previous = None
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if wanted is None:
                out.append(frame.to_ndarray(format="rgb24"))
                pts.append(t)
                continue
            while i < len(wanted) and wanted[i] < t and previous is not None:
                out.append(previous[1].to_ndarray(format="rgb24"))
                pts.append(previous[0])
                i += 1
            if i == len(wanted):
                break
            previous = (t, frame)
        while wanted is not None and i < len(wanted) and previous is not None:
            out.append(previous[1].to_ndarray(format="rgb24"))
            pts.append(previous[0])
            i += 1
    return torch.from_numpy(__import__("numpy").stack(out)).permute(0, 3, 1, 2), pts


def providers(device: str, threads: int):
    yield "torchcodec-cpu-exact", lambda p, t: decode(p, timestamps=t, seek_mode="exact", num_threads=threads)
    yield "torchcodec-cpu-approx", lambda p, t: decode(p, timestamps=t, seek_mode="approximate",
                                                       num_threads=threads)
    if device == "cuda":
        yield "torchcodec-cuda", lambda p, t: decode(p, timestamps=t, device="cuda",
                                                     backend="torchcodec")
        yield "dali-cuda", lambda p, t: decode(p, timestamps=t, device="cuda", backend="dali")
    yield "pyav-cpu", lambda p, t: pyav_decode(p, t, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds")
    parser.add_argument("--resolutions", nargs="+", default=["360p"],
                        choices=sorted(RESOLUTIONS), help="clip sizes")
    parser.add_argument("--codecs", nargs="+", default=["h264", "hevc"], choices=["h264", "hevc"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device for the CUDA providers (cpu: CPU providers only)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (CPU)")
    parser.add_argument("--threads", type=int, default=0,
                        help="FFmpeg decoding threads for every CPU provider (0: FFmpeg decides)")
    parser.add_argument("--workdir", default=None, help="where clips are written (default: temp)")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        for res in args.resolutions:
            width, height = RESOLUTIONS[res]
            for codec in args.codecs:
                path = str(clips.make_clip(root / f"{res}_{codec}.mp4", width=width, height=height,
                                           fps=FPS, seconds=args.seconds, codec=codec,
                                           pattern="testsrc2"))
                total = round(FPS * args.seconds)
                times = [(k + 0.5) * args.seconds / 32 for k in range(32)]
                expected_ts = [math.floor(t * FPS + 1e-9) / FPS for t in times]
                for mode, wanted, expect in (("all", None, [k / FPS for k in range(total)]),
                                             ("ts32", times, expected_ts)):
                    for name, run in providers(args.device, args.threads):
                        try:
                            with warnings.catch_warnings():
                                warnings.simplefilter("error")
                                result = run(path, wanted)
                        except (BackendUnavailable, ImportError, RuntimeError, UserWarning) as err:
                            print(f"skip {name} {mode} {res} {codec}: {str(err)[:120]}")
                            continue
                        pts = result[1] if name == "pyav-cpu" else result.pts.tolist()
                        if len(pts) != len(expect) or max(abs(a - b) for a, b in zip(pts, expect)) > 1e-3:
                            raise AssertionError(f"{name} {mode} {res} {codec}: wrong pts {pts[:5]}...")
                        dev = "cuda" if "cuda" in name else "cpu"
                        ms = time_ms(lambda: run(path, wanted), dev, warmup=1, reps=args.reps)
                        rows.append(dict(what="decode", provider=name, mode=mode,
                                         shape=f"{res}-{codec}-{args.seconds:g}s-threads{args.threads}", dtype="uint8",
                                         metric="frames_per_s", median=round(len(expect) / ms * 1e3, 1),
                                         unit="frames/s", device=device_name(dev)))
    print_table(rows)
    print("appended to", append_rows("decode.csv", rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

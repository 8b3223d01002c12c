"""`tempo-fast synth --out DIR [--num-videos N] [--seed S] [--size WxH] [--fps F] [--seconds A-B]
[--objects A-B] [--event-scale X] [--events-per-object K]`:
render the synthetic grounding set (H.264 clips, QVHighlights-layout splits, facts sidecar) into
DIR; clips already in DIR are kept, so an interrupted run resumes where it stopped."""
from __future__ import annotations

import argparse


def _pair(text: str, sep: str, kind, what: str) -> tuple:
    parts = text.lower().split(sep)
    try:
        if len(parts) == 1:
            return kind(parts[0]), kind(parts[0])
        if len(parts) == 2:
            return kind(parts[0]), kind(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{what} must look like A{sep}B (or one value), got {text!r}")


def _size(text: str) -> tuple[int, int]:
    return _pair(text, "x", int, "--size")


def _seconds(text: str) -> tuple[float, float]:
    return _pair(text, "-", float, "--seconds")


def _objects(text: str) -> tuple[int, int]:
    return _pair(text, "-", int, "--objects")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created; existing clips are kept)")
    parser.add_argument("--num-videos", type=int, default=300, help="number of clips")
    parser.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same set")
    parser.add_argument("--size", type=_size, default=(64, 64), metavar="WxH", help="frame size in pixels (even)")
    parser.add_argument("--fps", type=int, default=8, help="frames per second")
    parser.add_argument("--seconds", type=_seconds, default=(8.0, 16.0), metavar="A-B", help="clip length range in seconds")
    parser.add_argument("--objects", type=_objects, default=(2, 4), metavar="A-B", help="objects per clip")
    parser.add_argument("--event-scale", type=float, default=1.0,
                        help="event lengths times this (base: appear/disappear 0.5-1 s, move 1-2.5 s, change 1-2 s)")
    parser.add_argument("--events-per-object", type=int, default=0,
                        help="at most this many events per object, at random times (0: 1-4, appear first, disappear last)")
    parser.add_argument("--crf", type=int, default=20, help="x264 constant rate factor")
    parser.add_argument("--workers", type=int, default=0, help="rendering processes (0: one per CPU core)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from tempo_fast.data.synthetic import FFmpegNotFound, SynthConfig, generate_synthetic

    try:
        config = SynthConfig(num_videos=args.num_videos, seed=args.seed, width=args.size[0], height=args.size[1],
                             fps=args.fps, min_seconds=args.seconds[0], max_seconds=args.seconds[1],
                             min_objects=args.objects[0], max_objects=args.objects[1],
                             event_scale=args.event_scale, events_per_object=args.events_per_object, crf=args.crf,
                             workers=args.workers)
        result = generate_synthetic(args.out, config, progress=args.progress)
    except (ValueError, FFmpegNotFound) as exc:  # bad settings, a folder made with other settings, no ffmpeg
        raise SystemExit(f"tempo-fast synth: {exc}") from None
    print(f"{result.out_dir}: {result.num_videos} clips ({result.rendered} rendered, {result.reused} kept), "
          f"{result.num_queries} queries, {result.seconds:.1f} s "
          f"({result.clips_per_second:.1f} clips/s rendered)")
    return 0

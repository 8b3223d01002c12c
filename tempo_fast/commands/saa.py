"""`tempo-fast saa VIDEO --out saa.png`: a picture of what SAA does to one video.

Three panels: the probe's variation score over time with the sampling density it gives; the
chosen frame times against the plain uniform ones (one tick per frame); a grid of thumbnails
of the chosen frames (8 per row), each labelled with its time. Drawn with matplotlib's Agg canvas (no
display needed); the summary (duration, mean variation, the times) is printed too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file to analyse")
    parser.add_argument("--out", default="saa.png", help="PNG file to write")
    parser.add_argument("--num-frames", type=int, default=32, help="frames to sample (a multiple of --temporal-patch)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the variation in the density (0: uniform)")
    parser.add_argument("--probe-fps", type=float, default=4.0, help="rate of the probe decode")
    parser.add_argument("--smooth-seconds", type=float, default=0.5, help="Gaussian smoothing of the scores (s)")
    parser.add_argument("--temporal-patch", type=int, default=2, help="frames per slot (Qwen2.5-VL merges 2)")
    parser.add_argument("--thumbs", type=int, default=16, help="thumbnails shown (evenly picked among the chosen frames)")
    parser.add_argument("--thumb-height", type=int, default=72, help="thumbnail height in pixels")


def _thumbnail_grid(video: str, times: torch.Tensor, count: int, height: int, width: int, columns: int = 8):
    """The frames at an even pick of `count` of `times`, tiled `columns` per row into one
    uint8 image [rows*(height+2), columns*(width+2), 3] (white gaps), and the picked times."""
    from tempo_fast.video.decode import decode

    pick = torch.linspace(0, len(times) - 1, min(count, len(times))).round().long().unique()
    frames = decode(video, timestamps=times[pick], size=(height, width)).data.cpu()
    rows = -(-len(pick) // columns)
    grid = torch.full((3, rows * (height + 2), min(columns, len(pick)) * (width + 2)), 255, dtype=torch.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        grid[:, r * (height + 2):r * (height + 2) + height, c * (width + 2):c * (width + 2) + width] = frame
    return grid.permute(1, 2, 0).numpy(), times[pick]


def draw(plan, video: str, out: Path, *, thumbs: int, thumb_height: int, aspect: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9), layout="constrained")
    curve, ticks, strip = fig.subplots(3, 1, height_ratios=[3, 1.2, 3])
    edges, values = plan.density.edges.numpy(), plan.density.values.numpy()
    curve.plot(plan.probe_times.numpy(), plan.scores.numpy(), color="tab:blue", lw=1, label="variation score")
    curve.set_ylabel("mean |Δ| / 255")
    curve.set_xlim(0, plan.duration)
    curve.set_title(f"SAA on {Path(video).name}: {len(plan.times)} frames, mean variation {plan.variation:.4f}")
    density = curve.twinx()
    density.stairs(values * plan.duration, edges, color="tab:orange", lw=1.5, label="density × duration")
    density.axhline(1.0, color="tab:orange", lw=0.8, ls=":")
    density.set_ylabel("sampling density × duration")
    handles = curve.get_legend_handles_labels()[0] + density.get_legend_handles_labels()[0]
    curve.legend(handles=handles, loc="upper left", fontsize=8)

    ticks.eventplot([plan.times.numpy(), plan.uniform.numpy()], lineoffsets=[1, 0], linelengths=0.8,
                    colors=["tab:red", "tab:gray"])
    ticks.set_yticks([1, 0], ["SAA", "uniform"])
    ticks.set_xlim(0, plan.duration)
    ticks.set_xlabel("time (s)")

    width = max(8, round(thumb_height * aspect))
    image, shown = _thumbnail_grid(video, plan.times, thumbs, thumb_height, width)
    strip.imshow(image)
    strip.set_axis_off()
    for i, t in enumerate(shown.tolist()):
        r, c = divmod(i, 8)
        strip.text(c * (width + 2) + 2, r * (thumb_height + 2) + 2, f"{t:.1f}s", fontsize=7, va="top",
                   color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1, lw=0))
    strip.set_title("chosen frames", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.video.decode import probe
    from tempo_fast.video.saa import saa_plan

    if args.thumbs < 1 or args.thumb_height < 8:
        raise SystemExit(f"tempo-fast saa: --thumbs must be >= 1 and --thumb-height >= 8, got "
                         f"{args.thumbs} and {args.thumb_height}")
    info = probe(args.video)
    plan = saa_plan(args.video, args.num_frames, alpha=args.alpha, probe_fps=args.probe_fps,
                    smooth_seconds=args.smooth_seconds, temporal_patch=args.temporal_patch)
    aspect = info.width / info.height if info.height else 1.0
    out = Path(args.out)
    draw(plan, args.video, out, thumbs=args.thumbs, thumb_height=args.thumb_height, aspect=aspect)
    times = ", ".join(f"{t:.2f}" for t in plan.times.tolist())
    print(f"{args.video}: {plan.duration:.2f} s at {plan.fps:.2f} fps, mean variation {plan.variation:.4f}")
    print(f"SAA times (alpha={args.alpha}): {times}")
    print(f"wrote {out}")
    return 0

"""Rendering a plan to uint8 RGB frames with numpy (frame k shows time k/fps) and encoding frames
to H.264 MP4 through ffmpeg (one x264 thread per clip, bit-exact flags, so the same plan gives the
same file)."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from .plan import object_state
from .vocab import EXTENT, SHAPES

INSTALL_FFMPEG = ("install it with `apt-get install -y ffmpeg` (Debian/Ubuntu; conda: "
                  "`conda install -c conda-forge ffmpeg`)")


class FFmpegNotFound(RuntimeError):
    """The ffmpeg executable is not on PATH (its message is one line saying how to install it)."""


def require_ffmpeg() -> str:
    """Path of the ffmpeg executable; raises FFmpegNotFound with the install command when absent."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise FFmpegNotFound(f"ffmpeg not found on PATH: {INSTALL_FFMPEG}")
    return path


def _background_image(bg: dict, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = np.sin(2 * np.pi * (bg["freq"][0] * x / width + bg["freq"][1] * y / height) + bg["phase"])
    img = np.asarray(bg["rgb"], np.float32)[None, None, :] + bg["amp"] * wave[..., None]
    return np.clip(img, 0, 255)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * EXTENT
    if shape == "triangle":  # apex up, base of half-width r at the bottom
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) * 0.5)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_frames(plan: dict) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3] of a plan; frame k shows time k / fps."""
    w, h, n = plan["width"], plan["height"], plan["num_frames"]
    backgrounds = [(0, _background_image(plan["background"], w, h))]
    for d in plan["distractors"]:
        if d["kind"] == "cut":
            backgrounds.append((d["k0"], _background_image(d["background"], w, h)))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), np.uint8)
    for k in range(n):
        img = next(b for k0, b in reversed(backgrounds) if k >= k0).copy()
        for obj in plan["objects"]:
            x, y, scale, rgb = object_state(obj, k)
            r = obj["radius"] * scale
            if r < 0.5:
                continue
            mask = _shape_mask(obj["shape"], xs - x, ys - y, r)
            img[mask] = rgb.astype(np.float32)
        for d in plan["distractors"]:
            if d["kind"] == "brightness" and d["k0"] <= k < d["k1"]:
                a = 1.0 - abs(2.0 * (k - d["k0"]) / (d["k1"] - d["k0"]) - 1.0)  # ramp up then down
                img = img * (1.0 + a * (d["gain"] - 1.0))
        frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        for d in plan["distractors"]:
            if d["kind"] == "shake" and d["k0"] <= k < d["k1"]:
                dx, dy = d["offsets"][k - d["k0"]]
                pad = max(abs(dx), abs(dy))
                padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
                frame = padded[pad + dy:pad + dy + h, pad + dx:pad + dx + w]
        frames[k] = frame
    return frames


def encode_h264(clips: list[tuple[np.ndarray, Path]], fps: int, crf: int = 20) -> None:
    """Write each (uint8 RGB frames [T, H, W, 3], path) as an H.264 MP4, all through one ffmpeg
    process (its start-up, ~0.15 s, dominates a short clip; the encoders stay independent, so a
    file's bytes do not depend on its batch). Frames go through one pipe per clip; files appear by
    an atomic rename once ffmpeg succeeded; a failure raises RuntimeError with ffmpeg's message."""
    ffmpeg = require_ffmpeg()
    for frames, path in clips:
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames for {path} must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    pipes = [os.pipe() for _ in clips]
    tmps = [path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4") for _, path in clips]
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    for (frames, _), (read_fd, _) in zip(clips, pipes):
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{frames.shape[2]}x{frames.shape[1]}",
                "-r", str(fps), "-i", f"pipe:{read_fd}"]
    for i, tmp in enumerate(tmps):
        cmd += ["-map", f"{i}:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
                "-pix_fmt", "yuv420p", "-threads", "1", "-x264-params", "log-level=error",
                "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-f", "mp4", str(tmp)]
    try:
        proc = subprocess.Popen(cmd, pass_fds=[r for r, _ in pipes], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for read_fd, _ in pipes:
            os.close(read_fd)
        # one writer per pipe: ffmpeg reads its inputs in turn, a single writer could deadlock
        writers = [threading.Thread(target=_write_pipe, args=(fd, frames), daemon=True)
                   for (frames, _), (_, fd) in zip(clips, pipes)]
        for writer in writers:
            writer.start()
        _, stderr = proc.communicate()
        for writer in writers:
            writer.join()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}) writing {[str(p) for _, p in clips]}: "
                               f"{stderr.decode(errors='replace').strip()[-500:]}")
        for tmp, (_, path) in zip(tmps, clips):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _write_pipe(fd: int, frames: np.ndarray) -> None:
    with open(fd, "wb", closefd=True) as pipe:
        try:
            pipe.write(np.ascontiguousarray(frames).data)
        except BrokenPipeError:  # ffmpeg stopped early: its own error message is what matters
            pass


def _make_clips(plans: list[dict], videos_dir: str, crf: int) -> list[str]:
    """Render and encode a batch of clips (one process-pool task)."""
    encode_h264([(render_frames(p), Path(videos_dir) / f"{p['vid']}.mp4") for p in plans], plans[0]["fps"], crf)
    return [p["vid"] for p in plans]

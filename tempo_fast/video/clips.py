"""Synthetic test clips made with the ffmpeg command-line tool (no videos live in git).

Every clip comes from an ffmpeg lavfi source, so its content and timing are known exactly:

- `make_clip`: one source (`testsrc`/`testsrc2`: a moving pattern with a frame counter, so every
  frame differs; `color`: a static frame; `smptebars`; `mandelbrot`) at a constant rate, frame k
  shown at k/fps, encoded with h264 (libx264), hevc (libx265), vp9 (libvpx-vp9) or mpeg4.
- `make_still_then_busy`: a static colour segment followed by a moving testsrc2 segment, the
  shape SAA is meant to exploit.
- `make_vfr_clip`: a variable-frame-rate clip, testsrc2 at full rate then at a quarter of it,
  timestamps kept (frame times are listed by `vfr_frame_times`).
- `make_audio_only`, `make_empty_video`: an audio-only file (a sine tone) and a video stream with
  zero frames, for the decoder's error paths.

The container follows the path's suffix (.mp4, .mkv, .webm, .mov). Clips are small and fast to
make (a 64x48, 4 s clip takes a few tens of milliseconds); existing files are overwritten.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CODECS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast"],
    "hevc": ["-c:v", "libx265", "-preset", "veryfast", "-x265-params", "log-level=error"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
    "mpeg4": ["-c:v", "mpeg4", "-q:v", "3"],
}
PATTERNS = ("testsrc", "testsrc2", "color", "smptebars", "mandelbrot")


class FFmpegError(RuntimeError):
    """The ffmpeg tool is missing or failed to make a clip."""


def ffmpeg_path() -> str:
    """Path of the ffmpeg executable; raises FFmpegError naming what to install when absent."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise FFmpegError("ffmpeg was not found on PATH; install FFmpeg (e.g. `apt-get install "
                          "ffmpeg`) to generate test clips")
    return path


def _codec_args(codec: str, pix_fmt: str) -> list[str]:
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    return [*CODECS[codec], "-pix_fmt", pix_fmt]


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _run(args: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise FFmpegError(f"ffmpeg failed making {path} (exit {proc.returncode}): "
                          f"{proc.stderr.strip()[-2000:]}\ncommand: {' '.join(cmd)}")
    return path


def _source(pattern: str, width: int, height: int, fps: float, seconds: float) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    name = "testsrc2" if pattern == "testsrc" else pattern
    if name == "color":
        return f"color=c=0x3366cc:s={width}x{height}:r={fps}:d={seconds}"
    return f"{name}=s={width}x{height}:r={fps}:d={seconds}"


def make_clip(path, *, width: int = 64, height: int = 48, fps: float = 8, seconds: float = 4,
              codec: str = "h264", pattern: str = "testsrc", pix_fmt: str = "yuv420p",
              extra: list[str] | None = None) -> Path:
    """Encode `seconds` of a lavfi `pattern` at a constant `fps` into `path` (frame k at k/fps).

    `extra` is a list of further ffmpeg output options (e.g. ["-g", "4"] for a short GOP, or
    ["-bf", "0"] to forbid B-frames), placed after the codec options.
    """
    _check_positive(width=width, height=height, fps=fps, seconds=seconds)
    args = ["-f", "lavfi", "-i", _source(pattern, width, height, fps, seconds),
            *_codec_args(codec, pix_fmt), *(extra or [])]
    return _run(args, Path(path))


def make_still_then_busy(path, still_seconds: float, busy_seconds: float, *, width: int = 64,
                         height: int = 48, fps: float = 8, codec: str = "h264",
                         color: str = "gray", pix_fmt: str = "yuv420p",
                         extra: list[str] | None = None) -> Path:
    """A static `color` segment of `still_seconds`, then `busy_seconds` of moving testsrc2."""
    _check_positive(still_seconds=still_seconds, busy_seconds=busy_seconds, width=width,
                    height=height, fps=fps)
    graph = (f"color=c={color}:s={width}x{height}:r={fps}:d={still_seconds}[still];"
             f"testsrc2=s={width}x{height}:r={fps}:d={busy_seconds}[busy];"
             f"[still][busy]concat=n=2:v=1:a=0[out]")
    args = ["-filter_complex", graph, "-map", "[out]", *_codec_args(codec, pix_fmt),
            *(extra or [])]
    return _run(args, Path(path))


def vfr_frame_times(*, fps: float = 8, seconds: float = 4, dense_seconds: float = 2,
                    every: int = 4) -> list[float]:
    """Presentation times (seconds) of the frames of `make_vfr_clip` with the same arguments."""
    count = round(fps * seconds)
    dense = round(fps * dense_seconds)
    return [n / fps for n in range(count) if n < dense or n % every == 0]


def make_vfr_clip(path, *, fps: float = 8, seconds: float = 4, dense_seconds: float = 2,
                  every: int = 4, width: int = 64, height: int = 48, codec: str = "h264",
                  pix_fmt: str = "yuv420p") -> Path:
    """A variable-frame-rate clip: testsrc2 at `fps` for `dense_seconds`, then every `every`-th
    frame only (fps/every), each frame keeping its source timestamp.

    The frame times are exactly `vfr_frame_times(...)` with the same arguments (B-frames are off;
    the stream ends one source frame, 1/fps, after the last kept frame).
    """
    _check_positive(fps=fps, seconds=seconds, dense_seconds=dense_seconds, every=every)
    dense = round(fps * dense_seconds)
    keep = f"select='lt(n\\,{dense})+not(mod(n\\,{int(every)}))'"
    args = ["-f", "lavfi", "-i", _source("testsrc2", width, height, fps, seconds), "-vf", keep,
            "-fps_mode", "vfr", *_codec_args(codec, pix_fmt), "-bf", "0"]
    return _run(args, Path(path))


def make_empty_video(path) -> Path:
    """A container (AVI, whatever the suffix says) holding a video stream with zero frames."""
    args = ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=8", "-frames:v", "0", "-c:v", "mpeg4",
            "-f", "avi"]
    return _run(args, Path(path))


def make_audio_only(path, *, seconds: float = 1.0) -> Path:
    """An audio-only file (a 440 Hz sine); the codec follows the suffix (.m4a/.mp4: AAC)."""
    _check_positive(seconds=seconds)
    args = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if Path(path).suffix.lower() in (".mp4", ".m4a", ".mov"):
        args += ["-c:a", "aac"]
    return _run(args, Path(path))

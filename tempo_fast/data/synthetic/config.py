"""`SynthConfig` (what the synthetic set looks like) and `SynthResult` (what a generation did)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .vocab import MAX_OBJECTS


@dataclass
class SynthConfig:
    """What the synthetic set looks like; everything but num_videos and workers fixes clip content."""

    num_videos: int = 300                       # clips in the set
    seed: int = 0                               # same seed -> same plans, frames and annotations
    width: int = 64                             # frame width in pixels (even, >= 16)
    height: int = 64                            # frame height in pixels (even, >= 16)
    fps: int = 8                                # frames per second
    min_seconds: float = 8.0                    # shortest clip
    max_seconds: float = 16.0                   # longest clip
    min_objects: int = 2                        # objects per clip, at least
    max_objects: int = 4                        # objects per clip, at most
    event_scale: float = 1.0                    # event lengths times this (base: appear/disappear 0.5-1 s, move 1-2.5 s, change 1-2 s)
    events_per_object: int = 0                  # at most this many events per object (0: 1-4, appear first, disappear last)
    shake_prob: float = 0.5                     # chance of one camera-shake stretch per clip
    brightness_prob: float = 0.5                # chance of one brightness ramp per clip
    cut_prob: float = 0.4                       # chance of one scene cut (background change) per clip
    size_word_prob: float = 0.3                 # chance a query names the object's size
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / val / test
    crf: int = 20                               # x264 constant rate factor
    workers: int = 0                            # processes rendering clips; 0 = os.cpu_count()

    def __post_init__(self):
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        problems = []
        if self.num_videos < 0:
            problems.append(f"num_videos={self.num_videos} must be >= 0")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 16 or value % 2:
                problems.append(f"{name}={value} must be even and >= 16 (H.264 4:2:0)")
        if not 0.25 <= self.event_scale <= 8.0:
            problems.append(f"event_scale={self.event_scale} must be in [0.25, 8]")
        if self.events_per_object < 0:
            problems.append(f"events_per_object={self.events_per_object} must be >= 0 (0: no limit)")
        if self.fps < 1:
            problems.append(f"fps={self.fps} must be >= 1")
        if not 2.0 <= self.min_seconds <= self.max_seconds:
            problems.append(f"seconds range {self.min_seconds}-{self.max_seconds} must satisfy 2 <= min <= max")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            problems.append(f"objects range {self.min_objects}-{self.max_objects} must satisfy "
                            f"1 <= min <= max <= {MAX_OBJECTS}")
        for name in ("shake_prob", "brightness_prob", "cut_prob", "size_word_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            problems.append(f"split_fractions={self.split_fractions} must be three non-negative numbers summing to 1")
        if self.workers < 0:
            problems.append(f"workers={self.workers} must be >= 0")
        if problems:
            raise ValueError("SynthConfig: " + "; ".join(problems))

    def content_fields(self) -> dict:
        """The fields that decide what a clip looks like (compared when resuming a folder)."""
        out = dataclasses.asdict(self)
        out.pop("num_videos")
        out.pop("workers")
        out["split_fractions"] = list(self.split_fractions)
        return out


@dataclass
class SynthResult:
    """What `generate_synthetic` did."""

    out_dir: Path                 # the output folder
    num_videos: int               # clips in the set
    rendered: int                 # clips rendered by this call
    reused: int                   # clips already present and kept
    num_queries: int              # queries over all splits
    seconds: float                # wall time of the call

    @property
    def clips_per_second(self) -> float:
        """Clips rendered per second of the whole call (planning and annotation writing included)."""
        return self.rendered / self.seconds if self.seconds > 0 else float("nan")

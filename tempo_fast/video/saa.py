"""SAA, self-adaptive attention allocation: where in a video to spend the frames, and how many.

`saa_sample(path, num_frames)` runs the whole method:

1. *Probe*: decode the video at `probe_fps` (frames shown at k/probe_fps) and `probe_size`
   pixels, and score each probe frame by its mean absolute difference to the previous one
   (`tempo_fast.ops.saa_scores`, values in [0, 1]).
2. *Density* (`saa_density`): the score s_i measures the change over [t_{i-1}, t_i] between
   probe frames i-1 and i, so the change rate is piecewise constant on those intervals
   (extended to [0, t_0] and [t_last, duration] by the nearest interval). It is smoothed by a
   Gaussian of `smooth_seconds` (over probe intervals, renormalised at the ends), normalised to
   integrate to 1, and mixed with the uniform density:
       p(t) = (1 - alpha) / duration + alpha * smooth(s)(t) / integral(smooth(s)).
   A video with no change at all has the uniform density for every alpha.
3. *Placement* (`saa_slot_times`): num_frames / temporal_patch slots; frame i of the N =
   num_frames frames sits at the CDF quantile (i + 0.5) / N, so slot k (frames k*tp .. k*tp+tp-1)
   is centred, in the density's own clock, on the quantile (k + 0.5) / K, its frames half a
   frame interval either side of it (closer together in seconds where the video is busy). Properties: alpha = 0 gives exactly `uniform_times` (the (i + 0.5) * duration / N rule);
   with alpha < 1 the density is at least (1 - alpha) / duration, so consecutive frames are at
   most duration / ((1 - alpha) * N) apart and consecutive slot centres at most
   duration / ((1 - alpha) * K) apart; the times are sorted and deterministic. Frames of one slot
   are spread to at least `min_gap` apart (one source frame interval in `saa_sample`, so they
   are distinct frames) as far as the neighbouring slots leave room: slots never overlap.
4. *Decode* the chosen frames at full size (or `size`). `Frames.pts` are the chosen times
   (each frame is the one on screen at its time; its own stream pts may be up to one source
   frame interval earlier).

"How much": `choose_budget(variation, max_visual_tokens=...)` trades the number of frames
against pixels per frame under one visual-token budget (see its docstring for the mapping).

Cost: the probe decodes the whole stream once (every packet, since it is compressed with
inter-frame prediction) but converts and scales only the probe frames, and at small size; the
scores read T*h*w*3 bytes. `benchmarks/bench_saa.py` measures the whole against plain uniform
sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .decode import Frames, decode
from .decode import probe as video_info
from .preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS


@dataclass(frozen=True)
class Density:
    """A piecewise-constant sampling density over [0, duration] seconds."""
    edges: torch.Tensor    # float64 [B + 1] bin edges (s), edges[0] = 0, edges[-1] = duration, increasing
    values: torch.Tensor   # float64 [B] density (1/s) in each bin; sum(values * widths) = 1

    @property
    def duration(self) -> float:
        return float(self.edges[-1])

    def cdf(self) -> torch.Tensor:
        """float64 [B + 1] cumulative mass at the edges: 0 first, exactly 1 last."""
        mass = torch.cumsum(self.values * torch.diff(self.edges), 0)
        return torch.cat([mass.new_zeros(1), mass / mass[-1]])

    def quantile(self, q: torch.Tensor) -> torch.Tensor:
        """Inverse CDF at probabilities q in [0, 1] (float64 seconds)."""
        cdf = self.cdf()
        q = q.to(torch.float64)
        # right=True picks, for q inside (0, 1), a bin of positive mass even next to empty bins.
        j = (torch.searchsorted(cdf, q, right=True) - 1).clamp_(0, len(self.values) - 1)
        lo, hi = cdf[j], cdf[j + 1]
        frac = ((q - lo) / (hi - lo)).clamp_(0.0, 1.0)
        return self.edges[j] + frac * (self.edges[j + 1] - self.edges[j])

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """Density at times t (float64 1/s); the last bin includes its right edge."""
        t = torch.as_tensor(t, dtype=torch.float64)
        j = (torch.searchsorted(self.edges, t, right=True) - 1).clamp_(0, len(self.values) - 1)
        return self.values[j]


class Budget(NamedTuple):
    """Frames and frame size chosen under a visual-token budget."""
    num_frames: int   # frames to sample (a multiple of temporal_patch)
    height: int       # frame height in pixels (a multiple of patch * merge)
    width: int        # frame width in pixels (a multiple of patch * merge)
    tokens: int       # visual tokens they cost: num_frames / temporal_patch * (height/28) * (width/28)


@dataclass
class SaaPlan:
    """What `saa_plan` decided, and the evidence: for the picture and for callers that decode."""
    probe_times: torch.Tensor   # float64 [M] times (s) of the probe frames
    scores: torch.Tensor        # float32 [M] variation score of each probe frame (s_0 = 0)
    density: Density            # the sampling density
    times: torch.Tensor         # float64 [num_frames] chosen frame times (s), sorted
    uniform: torch.Tensor       # float64 [num_frames] the plain uniform times, for comparison
    duration: float             # stream duration (s)
    fps: float                  # stream average frame rate
    variation: float            # mean score over the probe (the input of choose_budget)


def _check_unit_interval(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_frame_count(num_frames, temporal_patch) -> int:
    if isinstance(temporal_patch, bool) or not isinstance(temporal_patch, int) or temporal_patch < 1:
        raise ValueError(f"temporal_patch must be a positive int, got {temporal_patch!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if num_frames % temporal_patch:
        raise ValueError(f"num_frames must be a multiple of temporal_patch={temporal_patch} (frames "
                         f"are merged {temporal_patch} at a time), got {num_frames}")
    return num_frames // temporal_patch


def uniform_times(duration: float, num_frames: int) -> torch.Tensor:
    """Plain uniform sampling: frame i at (i + 0.5) * duration / num_frames (float64 seconds).

    The centre of each of num_frames equal stretches of the video; what SAA gives at alpha = 0.
    """
    duration = _check_positive("duration", duration)
    _check_frame_count(num_frames, 1)
    q = (torch.arange(num_frames, dtype=torch.float64) + 0.5) / num_frames
    return q * duration


def _smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing with standard deviation `sigma` samples, renormalised at the ends."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = min(len(values) - 1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2).view(1, 1, -1)
    smoothed = torch.nn.functional.conv1d(values.view(1, 1, -1), kernel, padding=radius)
    weight = torch.nn.functional.conv1d(torch.ones_like(values).view(1, 1, -1), kernel, padding=radius)
    return (smoothed / weight).view(-1)


def saa_density(scores, times, duration: float, alpha: float = 0.5, smooth_seconds: float = 0.5) -> Density:
    """The SAA sampling density from probe scores (see the module docstring, step 2).

    scores: [M] variation scores of probe frames (scores[0], the change into the first frame,
    is ignored); times: [M] their times in seconds, increasing; duration: the video length.
    """
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64).reshape(-1)
    times = torch.as_tensor(times).detach().to("cpu", torch.float64).reshape(-1)
    duration = _check_positive("duration", duration)
    alpha = _check_unit_interval("alpha", alpha)
    smooth_seconds = _check_positive("smooth_seconds", smooth_seconds, allow_zero=True)
    if len(scores) != len(times):
        raise ValueError(f"saa_density: scores and times must have the same length, got "
                         f"{len(scores)} scores and {len(times)} times")
    if len(scores) == 0:
        raise ValueError("saa_density: needs at least one probe frame, got none")
    if not (torch.isfinite(scores).all() and (scores >= 0).all()):
        raise ValueError(f"saa_density: scores must be finite and >= 0, got {scores.tolist()[:20]}")
    if not torch.isfinite(times).all() or (len(times) > 1 and (torch.diff(times) <= 0).any()):
        raise ValueError(f"saa_density: times must be finite and strictly increasing, got "
                         f"{times.tolist()[:20]}")

    uniform = Density(torch.tensor([0.0, duration], dtype=torch.float64),
                      torch.tensor([1.0 / duration], dtype=torch.float64))
    inner = times.clamp(0.0, duration)
    change = scores[1:]
    if alpha == 0.0 or len(change) == 0 or not bool((change > 0).any()):
        return uniform
    spacing = float(torch.diff(times).median())
    change = _smooth(change, smooth_seconds / spacing)
    # Bins [0, t_0], [t_0, t_1], ..., [t_last, duration], the end ones taking their neighbour's rate.
    edges = torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), duration)])
    rate = torch.cat([change[:1], change, change[-1:]])
    keep = torch.diff(edges) > 0
    edges = torch.cat([edges[:1], edges[1:][keep]])
    rate = rate[keep]
    mass = float((rate * torch.diff(edges)).sum())
    if mass <= 0:
        return uniform
    return Density(edges, (1.0 - alpha) / duration + alpha * rate / mass)


def _slot_room(centres: torch.Tensor, times: torch.Tensor, duration: float) -> torch.Tensor:
    """How far each slot may spread either side of its centre: not past the midpoint to a
    neighbouring slot's centre, nor past that slot's current frames, nor out of the video.
    Slots spread within this room never overlap, whether or not their neighbours spread too."""
    halfway = torch.diff(centres) / 2
    left = torch.cat([centres[:1], torch.minimum(halfway, centres[1:] - times[:-1, -1])])
    right = torch.cat([torch.minimum(halfway, times[1:, 0] - centres[:-1]), duration - centres[-1:]])
    return torch.minimum(left, right).clamp_min(0.0)


def saa_slot_times(density: Density, num_frames: int, *, temporal_patch: int = 2,
                   pair_gap: float | None = None, min_gap: float = 0.0) -> torch.Tensor:
    """Sorted frame times (float64 [num_frames] seconds) placed by `density` (module docstring, step 3).

    Consecutive groups of `temporal_patch` times are the slots, in order.
    pair_gap: None places the frames of a slot at the density quantiles around the slot's
    centre (closer together where the density is high); a number of seconds spaces them that
    far apart around the slot centre (the quantile (k + 0.5) / K). min_gap: frames of a slot
    closer than this are spread to min_gap apart around their mean. Both spreads stop where a
    slot would reach halfway to a neighbouring slot's centre, that slot's frames, or the end of
    the video, so slots never overlap; times stay within [0, duration].
    """
    slots = _check_frame_count(num_frames, temporal_patch)
    min_gap = _check_positive("min_gap", min_gap, allow_zero=True)
    if pair_gap is not None:
        pair_gap = _check_positive("pair_gap", pair_gap, allow_zero=True)
    duration = density.duration
    steps = temporal_patch - 1
    # Frame j of a spread slot sits at centre + half_span * unit[j], unit evenly from -1 to 1.
    unit = torch.linspace(-1.0, 1.0, temporal_patch, dtype=torch.float64) if steps \
        else torch.zeros(1, dtype=torch.float64)
    if pair_gap is None:
        q = (torch.arange(num_frames, dtype=torch.float64) + 0.5) / num_frames
        times = density.quantile(q).view(slots, temporal_patch)
        centres = times.mean(1)
    else:
        centres = density.quantile((torch.arange(slots, dtype=torch.float64) + 0.5) / slots)
        room = _slot_room(centres, centres[:, None], duration)
        times = centres[:, None] + room.clamp_max(pair_gap * steps / 2)[:, None] * unit
    if steps and min_gap > 0:
        span = times[:, -1] - times[:, 0]
        half = _slot_room(centres, times, duration).clamp_max(min_gap * steps / 2)
        times = torch.where((2 * half > span)[:, None], centres[:, None] + half[:, None] * unit, times)
    # Clamping and float rounding may leave a time a hair below its predecessor: keep the order.
    return torch.cummax(times.reshape(-1).clamp(0.0, duration), 0).values


def saa_plan(path, num_frames: int, *, alpha: float = 0.5, probe_fps: float = 4.0,
             probe_size: tuple[int, int] = (64, 64), smooth_seconds: float = 0.5,
             temporal_patch: int = 2, pair_gap: float | None = None, device="cpu",
             backend: str | None = None, decode_backend: str | None = None,
             num_threads: int = 1) -> SaaPlan:
    """Steps 1-3 of SAA (probe, density, placement) without decoding the chosen frames.

    backend: the `saa_scores` backend; decode_backend: the decoder's (`decode(backend=...)`).
    """
    _check_frame_count(num_frames, temporal_patch)
    _check_unit_interval("alpha", alpha)
    _check_positive("probe_fps", probe_fps)
    from tempo_fast.ops.saa_scores import saa_scores

    probe = decode(path, fps=probe_fps, size=probe_size, device=device, backend=decode_backend,
                   num_threads=num_threads)
    # A source slower than the probe rate, or a late first frame, repeats frames: keep one of each.
    distinct = torch.cat([torch.ones(1, dtype=torch.bool), torch.diff(probe.pts) > 0])
    data, pts = probe.data, probe.pts
    if not bool(distinct.all()):
        data, pts = data[distinct.to(data.device)], pts[distinct]
    scores = saa_scores(data, channels_last=False, backend=backend).cpu()
    density = saa_density(scores, pts, probe.duration, alpha, smooth_seconds)
    min_gap = 1.0 / probe.fps if probe.fps > 0 else 0.0
    times = saa_slot_times(density, num_frames, temporal_patch=temporal_patch, pair_gap=pair_gap,
                           min_gap=min_gap)
    variation = float(scores[1:].mean()) if len(scores) > 1 else 0.0
    return SaaPlan(probe_times=pts, scores=scores, density=density, times=times,
                   uniform=uniform_times(probe.duration, num_frames), duration=probe.duration,
                   fps=probe.fps, variation=variation)


def saa_sample(path, num_frames: int, *, alpha: float = 0.5, probe_fps: float = 4.0,
               probe_size: tuple[int, int] = (64, 64), device="cpu", smooth_seconds: float = 0.5,
               temporal_patch: int = 2, pair_gap: float | None = None,
               size: tuple[int, int] | None = None, backend: str | None = None,
               decode_backend: str | None = None, num_threads: int = 1) -> Frames:
    """Sample `num_frames` frames of the video at `path` where its content changes (SAA).

    Returns `Frames` on `device`: data uint8 [num_frames, C, H, W] (full size, or `size`=(H, W)),
    pts float64 [num_frames] the chosen times in seconds, sorted; consecutive groups of
    `temporal_patch` frames form one slot. alpha = 0 is plain uniform sampling (`uniform_times`).
    """
    if alpha == 0:  # the density is uniform whatever the content: skip the probe decode
        _check_frame_count(num_frames, temporal_patch)
        times = uniform_times(video_info(path).duration, num_frames)
    else:
        times = saa_plan(path, num_frames, alpha=alpha, probe_fps=probe_fps, probe_size=probe_size,
                         smooth_seconds=smooth_seconds, temporal_patch=temporal_patch, pair_gap=pair_gap,
                         device=device, backend=backend, decode_backend=decode_backend,
                         num_threads=num_threads).times
    frames = decode(path, timestamps=times, device=device, size=size, backend=decode_backend,
                    num_threads=num_threads)
    frames.pts = times.clone()
    return frames


def choose_budget(variation: float, *, max_visual_tokens: int, min_frames: int = 8,
                  max_frames: int = 256, patch: int = 14, merge: int = 2, temporal_patch: int = 2,
                  min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS,
                  aspect: float = 16 / 9, half_variation: float = 0.03) -> Budget:
    """Frames and frame size for a video of mean variation `variation` under a token budget.

    Qwen2.5-VL cuts frames into patch x patch pixels, merges merge x merge patches into one
    token (so a token is f x f pixels, f = patch * merge = 28) and temporal_patch consecutive
    frames into one temporal patch: N frames of H x W cost (N / temporal_patch) * (H/f) * (W/f)
    tokens. The mapping:

    1. busyness b = v / (v + half_variation) in [0, 1), v the mean SAA score at the probe rate
       (about 0.01 for a lecture, 0.05-0.15 for sports at 4 fps); half_variation is the v that
       gets half-way;
    2. frames N = min_frames * (max_frames / min_frames) ** b (geometric between the two),
       rounded down to a multiple of temporal_patch, and capped so that even at min_pixels the
       budget holds;
    3. tokens per frame = budget // (N / temporal_patch), capped by max_pixels and raised to
       min_pixels (the cap of step 2 keeps that within budget);
    4. size: h = floor(sqrt(tokens / aspect)) and w = floor(h * aspect) tokens (both >= 1),
       so h * w <= tokens and H x W = (h f) x (w f) keeps the aspect ratio (width / height).

    N is non-decreasing and H, W non-increasing in `variation`; the result never exceeds
    `max_visual_tokens`. Raises ValueError when even min_frames frames of one token do not fit.
    """
    if not (isinstance(variation, (int, float)) and math.isfinite(variation) and variation >= 0):
        raise ValueError(f"variation must be a finite number >= 0, got {variation!r}")
    for name, value in (("max_visual_tokens", max_visual_tokens), ("min_frames", min_frames),
                        ("max_frames", max_frames), ("patch", patch), ("merge", merge),
                        ("temporal_patch", temporal_patch), ("min_pixels", min_pixels),
                        ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _check_positive("aspect", aspect)
    _check_positive("half_variation", half_variation)
    if min_frames % temporal_patch or max_frames % temporal_patch or min_frames > max_frames:
        raise ValueError(f"min_frames and max_frames must be multiples of temporal_patch="
                         f"{temporal_patch} with min_frames <= max_frames, got {min_frames} and {max_frames}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels must be <= max_pixels, got {min_pixels} > {max_pixels}")

    side = patch * merge

    def tokens_to_size(tokens: int) -> tuple[int, int]:
        # Both sides are non-decreasing in `tokens`, and h * w <= tokens.
        h = max(1, math.isqrt(int(tokens / aspect)) if tokens >= aspect else 1)
        w = max(1, min(math.floor(h * aspect), tokens // h))
        return h, w

    min_tokens = max(1, math.ceil(min_pixels / side**2))
    max_tokens = max(min_tokens, max_pixels // side**2)
    # The smallest frame (min_pixels) must fit: frames with tokens_to_size(min_tokens) cost at most min_tokens.
    slots_cap = max_visual_tokens // min_tokens
    frames_cap = min(max_frames, slots_cap * temporal_patch)
    if frames_cap < min_frames:
        raise ValueError(f"max_visual_tokens={max_visual_tokens} cannot hold min_frames={min_frames} "
                         f"frames of min_pixels={min_pixels} ({min_tokens} tokens per temporal patch of "
                         f"{temporal_patch} frames)")
    busy = variation / (variation + half_variation)
    wanted = min_frames * (max_frames / min_frames) ** busy
    num_frames = min(frames_cap, max(min_frames, int(wanted // temporal_patch) * temporal_patch))
    slots = num_frames // temporal_patch
    tokens = min(max_tokens, max(min_tokens, max_visual_tokens // slots))
    h, w = tokens_to_size(tokens)
    return Budget(num_frames, h * side, w * side, slots * h * w)

"""The synthetic grounding set: short H.264 clips of coloured shapes with events at known times,
templated queries with exact ground-truth windows, and a sidecar of event facts.

Each clip is a pure function of `(config, index)`: a numpy generator seeded with
`SeedSequence([seed, index])` draws a *plan* (objects, events, distractors, queries), the plan is
rendered to uint8 RGB frames with numpy (frame k shows time k/fps), and the frames are piped to
`ffmpeg -f rawvideo ... -c:v libx264 -pix_fmt yuv420p` (one x264 thread per clip, bit-exact
flags, so the same plan gives the same file). Clips are rendered in a process pool.

Content:
- objects: a shape (square, circle, triangle, diamond) of one colour and size; no two objects of a
  clip ever share a (colour, shape) pair, and their boxes never overlap (counting the place of an
  object not yet appeared or gone), so "the red circle" names one object, its pixels are never
  hidden and the pixels where it appears show only background before;
- events (what queries ask about): `appear` (grows from nothing over the window), `disappear`
  (shrinks to nothing), `move` (slides in a straight line), `change` (colour blends to another);
- distractors (pixel changes that are NOT events): camera `shake`, `brightness` ramps and a scene
  `cut` (the background changes).

Queries read "the [size] colour shape verb [colour]" (`the red circle moves`, `the large blue
square turns green`), one per (object colour at the time, shape, action, target colour), with every
window where it happens (a circle moving twice gives two windows).

Output folder: `videos/<vid>.mp4`, `train.jsonl`/`val.jsonl`/`test.jsonl` in the QVHighlights layout
(qid, query, duration, vid, relevant_windows, relevant_clip_ids, saliency_scores), `facts.jsonl`
(one plan per video: objects, events with times, distractors, queries with their fields) and
`config.json`. Clips already present are kept (files appear by an atomic rename, so a present file
is complete), which makes a run resumable and a larger `num_videos` extend a set.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS = {  # name -> RGB; saturated, far apart after 4:2:0 chroma subsampling
    "red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 235),
    "yellow": (240, 220, 30), "white": (245, 245, 245), "purple": (165, 45, 205),
}
SHAPES = ("square", "circle", "triangle", "diamond")
SIZES = {"small": 0.09, "large": 0.15}  # shape radius as a fraction of min(width, height)
EXTENT = 1.25  # half-width of any shape's box in radii (the diamond reaches 1.25 r)
MAX_OBJECTS = 6
MARGIN = 1.0  # pixels kept free around each object's box
ACTIONS = {"appear": "appears", "disappear": "disappears", "move": "moves", "change": "turns"}
BACKGROUNDS = ((58, 58, 62), (40, 50, 72), (72, 56, 44), (44, 66, 56), (84, 80, 92), (30, 34, 38))
SPLITS = ("train", "val", "test")
CLIP_SECONDS = 2.0  # QVHighlights clip length for relevant_clip_ids / saliency_scores
_GOLDEN = (math.sqrt(5) - 1) / 2
BATCH_CLIPS = 8  # clips per ffmpeg process
BATCH_BYTES = 256 << 20  # most raw frame bytes held by one batch


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


def video_id(seed: int, index: int) -> str:
    return f"syn{seed}_{index:06d}"


def split_of(index: int, fractions: tuple[float, float, float]) -> str:
    """The split of clip `index`: a low-discrepancy sequence, so every prefix of the set has about
    the configured fractions and a clip's split never depends on the set's size."""
    u = (index * _GOLDEN) % 1.0
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def query_text(fields: dict) -> str:
    """The sentence for query fields {size, colour, shape, action, target}."""
    words = ["the"] + ([fields["size"]] if fields.get("size") else []) + [
        fields["colour"], fields["shape"], ACTIONS[fields["action"]]]
    if fields.get("target"):
        words.append(fields["target"])
    return " ".join(words)


def parse_query(text: str) -> dict | None:
    """Inverse of `query_text`; None when `text` is not a synthetic query."""
    words = text.strip().rstrip(".").lower().split()
    verbs = {verb: action for action, verb in ACTIONS.items()}
    if len(words) < 4 or words[0] not in ("the", "a"):
        return None
    words = words[1:]
    size = words.pop(0) if words[0] in SIZES else None
    if len(words) < 3 or words[0] not in COLOURS or words[1] not in SHAPES or words[2] not in verbs:
        return None
    action = verbs[words[2]]
    rest = words[3:]
    if action == "change":
        if len(rest) != 1 or rest[0] not in COLOURS:
            return None
        target = rest[0]
    elif rest:
        return None
    else:
        target = None
    return {"size": size, "colour": words[0], "shape": words[1], "action": action, "target": target}


def matches(fields: dict, event: dict) -> bool:
    """Whether query fields describe an event fact (a missing size or target matches any)."""
    return (fields["colour"] == event["colour"] and fields["shape"] == event["shape"]
            and fields["action"] == event["action"]
            and fields.get("size") in (None, event["size"])
            and fields.get("target") in (None, event.get("target")))


# ---------------------------------------------------------------- planning


def _frame_time(k: int, fps: int) -> float:
    return round(k / fps, 6)


def _object_schedule(rng: np.random.Generator, num_frames: int, fps: int, event_scale: float = 1.0,
                     max_events: int = 0) -> list[tuple[str, int, int]]:
    """(action, start frame, end frame) of one object's events, in time order, never overlapping;
    event lengths are the base ranges times `event_scale`. `max_events` > 0 keeps that many of the
    drawn events (a random subset, in order), so with 1 an object's one event may be any action at
    any time: its kind then says nothing about when it happens."""
    middle = ["move"] * int(rng.integers(1, 3)) + (["change"] if rng.random() < 0.45 else [])
    rng.shuffle(middle)
    actions = (["appear"] if rng.random() < 0.5 else []) + middle + (["disappear"] if rng.random() < 0.4 else [])
    if 0 < max_events < len(actions):
        keep = np.sort(rng.choice(len(actions), size=max_events, replace=False))
        actions = [actions[i] for i in keep]
    lengths = {"appear": (0.5, 1.0), "disappear": (0.5, 1.0), "move": (1.0, 2.5), "change": (1.0, 2.0)}
    min_gap = max(1, round(0.5 * fps))
    while actions:
        frames = [max(2, round(rng.uniform(*lengths[a]) * event_scale * fps)) for a in actions]
        slack = num_frames - 1 - sum(frames) - min_gap * (len(actions) + 1)
        if slack >= 0:
            break
        actions.pop(len(actions) // 2)  # too long for the clip: drop a middle event
    else:
        return []
    gaps = rng.dirichlet(np.ones(len(actions) + 1)) * slack
    schedule, k = [], 0
    for action, length, gap in zip(actions, frames, gaps):
        k += min_gap + int(gap)
        schedule.append((action, k, k + length))
        k += length
    return schedule


def _first_clear(others: list[np.ndarray], start: np.ndarray, end: np.ndarray, a: np.ndarray, k0: int,
                 half: float) -> int | None:
    """Index of the first candidate path that keeps a box of half-width `half` off all `others`
    (per-frame boxes, half-width 0 where absent), or None. Candidate i goes from start[i] to end[i] ([M, 2] points) along
    the fractions `a` ([L]) over frames k0 .. k0 + L."""
    xs = start[:, :1] + a[None, :] * (end[:, :1] - start[:, :1])
    ys = start[:, 1:] + a[None, :] * (end[:, 1:] - start[:, 1:])
    bad = np.zeros(len(start), dtype=bool)
    k1 = k0 + len(a)
    for other in others:
        ox, oy, oh = other[k0:k1, 0], other[k0:k1, 1], other[k0:k1, 2]
        reach = half + oh
        bad |= ((oh > 0) & (np.abs(xs - ox) < reach) & (np.abs(ys - oy) < reach)).any(axis=1)
    good = np.flatnonzero(~bad)
    return int(good[0]) if len(good) else None


def _object_track(rng, schedule, radius: float, width: int, height: int, colour: str, free_colours: list,
                  others: list[np.ndarray], num_frames: int, tries: int = 64) -> dict | None:
    """Start position, moves and colour changes along a schedule (the object's keyframes), drawn so
    that the object, visible or not, never touches the `others` (per-frame boxes);
    None when the start or some move finds no clear place among `tries` random candidates."""
    half = EXTENT * radius + MARGIN
    lo = np.array([EXTENT * radius + 1, EXTENT * radius + 1])
    hi = np.array([width - EXTENT * radius - 2, height - EXTENT * radius - 2])
    move_starts = [k0 for action, k0, _ in schedule if action == "move"] + [num_frames]
    candidates = rng.uniform(lo, hi, size=(tries, 2))
    i = _first_clear(others, candidates, candidates, np.zeros(move_starts[0]), 0, half)
    if i is None:
        return None
    pos = (float(candidates[i, 0]), float(candidates[i, 1]))
    track = {"start_pos": pos, "start_colour": colour, "steps": []}
    for action, k0, k1 in schedule:
        step = {"action": action, "k0": k0, "k1": k1}
        if action == "move":  # checked from this move's start until the next move starts
            candidates = rng.uniform(lo, hi, size=(tries, 2))
            far = np.hypot(*(candidates - np.array(pos)).T) >= 0.25 * min(width, height)
            candidates = candidates[far]
            a = np.clip((np.arange(k0, move_starts[move_starts.index(k0) + 1]) - k0) / (k1 - k0), 0.0, 1.0)
            i = _first_clear(others, np.broadcast_to(np.array(pos), candidates.shape), candidates, a, k0, half)
            if i is None:
                return None
            step["from"], step["to"] = pos, (float(candidates[i, 0]), float(candidates[i, 1]))
            pos = step["to"]
        elif action == "change":
            if not free_colours:
                continue
            step["from"] = colour
            step["to"] = colour = free_colours.pop(int(rng.integers(len(free_colours))))
        track["steps"].append(step)
    return track


def object_state(obj: dict, k: int) -> tuple[float, float, float, np.ndarray]:
    """(centre x, centre y, scale in [0, 1], RGB float) of a planned object at frame k."""
    x, y = obj["track"]["start_pos"]
    rgb = np.array(COLOURS[obj["track"]["start_colour"]], dtype=np.float64)
    scale = 0.0 if any(s["action"] == "appear" for s in obj["track"]["steps"]) else 1.0
    for step in obj["track"]["steps"]:
        k0, k1 = step["k0"], step["k1"]
        a = min(max((k - k0) / (k1 - k0), 0.0), 1.0)
        if k < k0:  # later steps have not started yet
            break
        if step["action"] == "appear":
            scale = a
        elif step["action"] == "disappear":
            scale = min(scale, 1.0 - a)
        elif step["action"] == "move":
            (x0, y0), (x1, y1) = step["from"], step["to"]
            x, y = x0 + a * (x1 - x0), y0 + a * (y1 - y0)
        elif step["action"] == "change":
            c0, c1 = np.array(COLOURS[step["from"]], float), np.array(COLOURS[step["to"]], float)
            rgb = c0 + a * (c1 - c0)
    return x, y, scale, rgb


def _extents(obj: dict, num_frames: int) -> np.ndarray:
    """[T, 3] centre x, centre y and box half-width of an object per frame, counted also while it
    is invisible, so that no other object ever enters the place where it will appear."""
    out = np.zeros((num_frames, 3))
    for k in range(num_frames):
        x, y, _, _ = object_state(obj, k)
        out[k] = (x, y, EXTENT * obj["radius"] + MARGIN)
    return out


def _event_facts(obj: dict, fps: int, size_px: tuple[int, int]) -> list[dict]:
    facts, colour = [], obj["track"]["start_colour"]
    for step in obj["track"]["steps"]:
        probe = step["k0"] if step["action"] == "disappear" else step["k1"]
        x, y, _, _ = object_state(obj, probe)
        r = EXTENT * obj["radius"]
        facts.append({
            "object": obj["id"], "shape": obj["shape"], "size": obj["size"], "colour": colour,
            "action": step["action"], "target": step.get("to") if step["action"] == "change" else None,
            "start": _frame_time(step["k0"], fps), "end": _frame_time(step["k1"], fps),
            "box": [max(0, math.floor(x - r)), max(0, math.floor(y - r)),
                    min(size_px[0], math.ceil(x + r) + 1), min(size_px[1], math.ceil(y + r) + 1)]})
        if step["action"] == "change":
            colour = step["to"]
    return facts


def _distractors(rng, config: SynthConfig, num_frames: int) -> list[dict]:
    out, fps = [], config.fps
    if rng.random() < config.shake_prob:
        length = max(2, round(rng.uniform(0.5, 1.5) * fps))
        k0 = int(rng.integers(0, max(1, num_frames - length)))
        amp = max(1, round(0.03 * min(config.width, config.height)))
        offsets = rng.integers(-amp, amp + 1, size=(length, 2)).tolist()
        out.append({"kind": "shake", "k0": k0, "k1": k0 + length, "offsets": offsets,
                    "start": _frame_time(k0, fps), "end": _frame_time(k0 + length, fps)})
    if rng.random() < config.brightness_prob:
        length = max(2, round(rng.uniform(1.0, 3.0) * fps))
        k0 = int(rng.integers(0, max(1, num_frames - length)))
        gain = float(rng.choice([rng.uniform(0.55, 0.75), rng.uniform(1.25, 1.45)]))
        out.append({"kind": "brightness", "k0": k0, "k1": k0 + length, "gain": gain,
                    "start": _frame_time(k0, fps), "end": _frame_time(k0 + length, fps)})
    if rng.random() < config.cut_prob:
        k0 = int(rng.integers(fps, max(fps + 1, num_frames - fps)))
        out.append({"kind": "cut", "k0": k0, "k1": k0, "background": _background(rng),
                    "start": _frame_time(k0, fps), "end": _frame_time(k0, fps)})
    return out


def _background(rng) -> dict:
    return {"rgb": list(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]),
            "freq": [float(rng.uniform(0.5, 2.5)), float(rng.uniform(0.5, 2.5))],
            "phase": float(rng.uniform(0, 2 * math.pi)), "amp": float(rng.uniform(8, 16))}


def _clip_ids(windows: list[tuple[float, float]], duration: float) -> tuple[list[int], list[list[int]]]:
    """QVHighlights 2-second clips touched by the windows and a 0-4 saliency from their coverage."""
    ids, scores = [], []
    for c in range(math.ceil(duration / CLIP_SECONDS - 1e-9)):
        lo, hi = c * CLIP_SECONDS, min((c + 1) * CLIP_SECONDS, duration)
        covered = sum(max(0.0, min(hi, e) - max(lo, s)) for s, e in windows)
        if covered > 0:
            score = max(1, min(4, round(4 * covered / (hi - lo))))
            ids.append(c)
            scores.append([score] * 3)
    return ids, scores


def _place_objects(rng, config: SynthConfig, num_frames: int) -> list[dict]:
    """Draw the clip's objects one by one, each clear of those before it; an object that finds no
    room is left out."""
    fps, short = config.fps, min(config.width, config.height)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    objects, extents = [], []
    for colour, shape in chosen:
        for _ in range(20):  # redraw this object's size, schedule and path until it fits
            size = str(rng.choice(list(SIZES)))
            radius = max(2.0, SIZES[size] * short)
            free = [c for c in COLOURS if (c, shape) not in chosen
                    and all(o["shape"] != shape or c not in o["colours"] for o in objects)]
            schedule = _object_schedule(rng, num_frames, fps, config.event_scale, config.events_per_object)
            track = _object_track(rng, schedule, radius, config.width,
                                  config.height, colour, free, extents, num_frames)
            if track is not None:
                break
        else:  # no room left in the frame: fewer objects
            continue
        colours = [colour] + [s["to"] for s in track["steps"] if s["action"] == "change"]
        obj = {"id": len(objects), "shape": shape, "size": size, "radius": radius,
               "colours": colours, "track": track}
        objects.append(obj)
        extents.append(_extents(obj, num_frames))
    return objects


def plan_video(config: SynthConfig, index: int) -> dict:
    """The full description of clip `index`: everything rendering and the annotations need."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
    fps = config.fps
    num_frames = max(2 * fps, round(rng.uniform(config.min_seconds, config.max_seconds) * fps))
    for _ in range(10):  # redraw the whole cast when fewer than min_objects found room
        objects = _place_objects(rng, config, num_frames)
        if len(objects) >= config.min_objects:
            break
    else:
        raise RuntimeError(f"synthetic clip {index} (seed {config.seed}): could not place {config.min_objects} "
                           f"objects without overlap in {config.width}x{config.height}; "
                           "use larger frames or fewer objects")
    duration = _frame_time(num_frames, fps)
    events = [f for obj in objects for f in _event_facts(obj, fps, (config.width, config.height))]
    vid = video_id(config.seed, index)
    groups: dict[tuple, list] = {}
    for event in sorted(events, key=lambda e: (e["start"], e["object"])):
        groups.setdefault((event["object"], event["colour"], event["action"], event["target"]), []).append(event)
    queries = []
    for j, ((obj_id, colour, action, target), evs) in enumerate(groups.items()):
        obj = objects[obj_id]
        fields = {"size": obj["size"] if rng.random() < config.size_word_prob else None,
                  "colour": colour, "shape": obj["shape"], "action": action, "target": target}
        windows = [(e["start"], e["end"]) for e in evs]
        clip_ids, saliency = _clip_ids(windows, duration)
        queries.append({"qid": index * 1000 + j, "query": query_text(fields), "fields": fields,
                        "windows": [list(w) for w in windows], "relevant_clip_ids": clip_ids,
                        "saliency_scores": saliency})
    return {"vid": vid, "index": index, "split": split_of(index, config.split_fractions),
            "duration": duration, "fps": fps, "width": config.width, "height": config.height,
            "num_frames": num_frames, "background": _background(rng), "objects": objects,
            "events": events, "distractors": _distractors(rng, config, num_frames), "queries": queries}


# ---------------------------------------------------------------- rendering and encoding


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
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg was not found on PATH; install FFmpeg (e.g. apt-get install ffmpeg)")
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


# ---------------------------------------------------------------- the set


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_resume(out_dir: Path, config: SynthConfig) -> None:
    path = out_dir / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    new = config.content_fields()
    old.setdefault("event_scale", 1.0)  # folders written before the field existed
    old.setdefault("events_per_object", 0)
    differ = sorted(k for k in new if old.get(k) != new[k])
    if differ:
        raise ValueError(f"{out_dir} holds a synthetic set made with other settings "
                         f"({', '.join(f'{k}: {old.get(k)!r} there, {new[k]!r} now' for k in differ)}); "
                         "use another output folder or the same settings")


def annotation_rows(plan: dict) -> list[dict]:
    """The QVHighlights-layout annotation lines of one planned clip."""
    return [{"qid": q["qid"], "query": q["query"], "duration": plan["duration"], "vid": plan["vid"],
             "relevant_windows": q["windows"], "relevant_clip_ids": q["relevant_clip_ids"],
             "saliency_scores": q["saliency_scores"]} for q in plan["queries"]]


def generate_synthetic(out_dir: str | os.PathLike, config: SynthConfig | None = None, *,
                       progress: bool = True) -> SynthResult:
    """Render the synthetic set into `out_dir` (see the module docstring for the layout)."""
    start = time.perf_counter()
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    videos_dir = out_dir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, config)
    _write_atomic(out_dir / "config.json", json.dumps(config.content_fields(), indent=1) + "\n")
    for leftover in videos_dir.glob(".*.tmp.mp4"):  # partial files of an interrupted run
        leftover.unlink()
    plans = [plan_video(config, i) for i in range(config.num_videos)]
    todo = [p for p in plans if not (videos_dir / f"{p['vid']}.mp4").is_file()]
    workers = min(config.workers or os.cpu_count() or 1, max(1, len(todo)))
    frame_bytes = config.width * config.height * 3 * config.fps * config.max_seconds
    per_batch = max(1, min(BATCH_CLIPS, int(BATCH_BYTES // frame_bytes), math.ceil(len(todo) / workers)))
    batches = [todo[i:i + per_batch] for i in range(0, len(todo), per_batch)]
    bar = _progress(len(todo), progress)
    if workers == 1:
        for batch in batches:
            _make_clips(batch, str(videos_dir), config.crf)
            bar.update(len(batch))
    else:
        # fork on Linux: callers need no `if __name__ == "__main__"` guard, and workers touch only
        # numpy and ffmpeg, none of the parent's threads or torch state
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(_make_clips, batch, str(videos_dir), config.crf) for batch in batches]
            for future in cf.as_completed(futures):
                bar.update(len(future.result()))
    bar.close()
    num_queries = 0
    for split in SPLITS:
        rows = [row for p in plans if p["split"] == split for row in annotation_rows(p)]
        num_queries += len(rows)
        _write_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_atomic(out_dir / "facts.jsonl", "".join(json.dumps(p) + "\n" for p in plans))
    return SynthResult(out_dir, len(plans), len(todo), len(plans) - len(todo), num_queries,
                       time.perf_counter() - start)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="clip", desc="synth")


def load_facts(path: str | os.PathLike) -> dict[str, dict]:
    """The sidecar of a synthetic set (`facts.jsonl`, or the folder holding it): {vid: plan}."""
    path = Path(path)
    if path.is_dir():
        path = path / "facts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic facts file at {path} (expected facts.jsonl from generate_synthetic)")
    with open(path, encoding="utf-8") as f:
        return {plan["vid"]: plan for plan in map(json.loads, filter(str.strip, f))}

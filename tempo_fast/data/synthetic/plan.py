"""Planning one clip: a pure function of `(config, index)` drawn with a numpy generator seeded by
`SeedSequence([seed, index])` - objects placed without overlap, each object's events and path,
distractors, the queries with their exact windows - and the QVHighlights annotation rows of a plan."""
from __future__ import annotations

import math

import numpy as np

from .config import SynthConfig
from .vocab import BACKGROUNDS, CLIP_SECONDS, COLOURS, EXTENT, MARGIN, SHAPES, SIZES, query_text, split_of, video_id


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


def annotation_rows(plan: dict) -> list[dict]:
    """The QVHighlights-layout annotation lines of one planned clip."""
    return [{"qid": q["qid"], "query": q["query"], "duration": plan["duration"], "vid": plan["vid"],
             "relevant_windows": q["windows"], "relevant_clip_ids": q["relevant_clip_ids"],
             "saliency_scores": q["saliency_scores"]} for q in plan["queries"]]

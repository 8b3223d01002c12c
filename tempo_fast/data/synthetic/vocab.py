"""The synthetic set's vocabulary and naming: colours, shapes, sizes and action words, the
query sentence for a set of fields and back (`query_text`, `parse_query`, `matches`), clip ids and
the split rule (`video_id`, `split_of`)."""
from __future__ import annotations

import math

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

"""PIR samples: turn some relevant (video, query) records into irrelevant and partially irrelevant
ones, the negatives PIR-GRPO teaches the model to refuse.

- irrelevant: the query of another video whose event does not occur in this one. With the
  synthetic set's facts (`tempo_fast.data.synthetic.load_facts`) this is exact: the borrowed query
  matches no event of this video. Without facts (real sets) it is a query of a different video
  whose token Jaccard similarity to every query of this video is at most `max_jaccard`.
- partial: the true query with exactly one word swapped (colour, number, object/shape, size or
  action) so that it no longer happens. With facts it is exact: the swapped query matches no event
  of the video. Without facts the swap comes from small same-category vocabularies (colours,
  numbers, common objects, verbs in the same inflection), which makes a mismatch likely but not
  certain (e.g. "a man opens the door" -> "a man closes the door" may also happen).

Both kinds get empty windows and keep the replaced query in `source_query`. Each input record gives
one output record at the same position; `round(n * fraction)` of them become each negative kind
(fewer only when no candidate exists), chosen with `random.Random(seed)`.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .loaders import GroundingRecord
from .synthetic import ACTIONS, COLOURS, SHAPES, SIZES, matches, parse_query, query_text

# word groups for swaps in free-text queries: a word is replaced by another of its group
SWAP_GROUPS = (
    ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "grey"),
    ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    ("man", "woman", "boy", "girl", "child", "baby"),
    ("men", "women", "boys", "girls", "children", "babies"),
    ("dog", "cat", "horse", "bird", "cow", "sheep", "fish", "monkey", "elephant"),
    ("dogs", "cats", "horses", "birds", "cows", "monkeys", "elephants"),
    ("car", "bus", "bike", "boat", "truck", "train", "plane", "motorcycle"),
    ("door", "window", "table", "chair", "bed", "sofa", "book", "phone", "laptop", "cup", "glass",
     "bottle", "box", "bag", "towel", "shoe", "pillow", "blanket", "mirror", "refrigerator", "sandwich",
     "broom", "camera", "picture", "shelf", "cabinet", "closet", "dish", "light", "television"),
    ("opens", "closes", "walks", "runs", "sits", "stands", "eats", "drinks", "holds", "throws",
     "takes", "pours", "washes", "laughs", "sneezes", "cooks", "dances", "sings", "plays", "watches",
     "talks", "smiles", "cries", "drives", "jumps", "swims", "sleeps", "cleans", "fixes", "dresses"),
    ("opening", "closing", "walking", "running", "sitting", "standing", "eating", "drinking",
     "holding", "throwing", "taking", "pouring", "washing", "laughing", "sneezing", "cooking",
     "dancing", "singing", "playing", "watching", "talking", "smiling", "crying", "driving",
     "jumping", "swimming", "sleeping", "cleaning", "fixing", "dressing"),
    ("opened", "closed", "walked", "ran", "sat", "stood", "ate", "drank", "held", "threw", "took",
     "poured", "washed", "laughed", "sneezed", "cooked", "danced", "sang", "played", "watched",
     "talked", "smiled", "cried", "drove", "jumped", "swam", "slept", "cleaned", "fixed", "dressed"),
)
_GROUP_OF = {word: group for group in SWAP_GROUPS for word in group}
_STOPWORDS = frozenset("a an the is are was were be been of to in on at and or with his her their its "
                       "he she they it them this that there into from by for up down out some".split())
_WORD = re.compile(r"\w+")


@dataclass
class PIRConfig:
    """How many negatives `make_pir_samples` makes and how it picks them."""

    irrelevant_fraction: float = 0.25   # share of output records that become irrelevant
    partial_fraction: float = 0.25      # share of output records that become partially irrelevant
    max_jaccard: float | None = 0.5     # without facts: most token Jaccard of a borrowed query to this video's queries (None: any)
    tries: int = 64                     # random candidates tried per irrelevant sample

    def __post_init__(self):
        problems = []
        for name in ("irrelevant_fraction", "partial_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.irrelevant_fraction + self.partial_fraction > 1.0 + 1e-9:
            problems.append(f"irrelevant_fraction + partial_fraction = "
                            f"{self.irrelevant_fraction + self.partial_fraction} must be <= 1")
        if self.max_jaccard is not None and not 0.0 <= self.max_jaccard <= 1.0:
            problems.append(f"max_jaccard={self.max_jaccard} must be in [0, 1] or None")
        if self.tries < 1:
            problems.append(f"tries={self.tries} must be >= 1")
        if problems:
            raise ValueError("PIRConfig: " + "; ".join(problems))


def tokens(text: str) -> frozenset[str]:
    """Lower-case content words of a query (stop words left out), for the Jaccard filter."""
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _synthetic_swaps(fields: dict, events: Sequence[dict]) -> list[dict]:
    """Query fields with one word changed that match none of the video's events."""
    options = {"colour": list(COLOURS), "shape": list(SHAPES)}
    if fields.get("size"):
        options["size"] = list(SIZES)
    if fields["action"] == "change":
        options["target"] = list(COLOURS)
    else:  # verbs of one word only, so the sentence keeps its length
        options["action"] = [a for a in ACTIONS if a != "change"]
    out = []
    for key, values in options.items():
        for value in values:
            new = {**fields, key: value}
            if value != fields[key] and not any(matches(new, e) for e in events):
                out.append(new)
    return out


def swap_word(query: str, rng: random.Random) -> str | None:
    """The query with one vocabulary word replaced by another of its group (absent from the
    query), keeping case and punctuation; None when no word of the query is in a group."""
    parts = re.split(r"(\w+)", query)
    present = {p.lower() for p in parts}
    choices = [(i, w) for i, part in enumerate(parts) if part.lower() in _GROUP_OF
               for w in _GROUP_OF[part.lower()] if w not in present]
    if not choices:
        return None
    i, word = rng.choice(choices)
    if parts[i].isupper() and len(parts[i]) > 1:
        word = word.upper()
    elif parts[i][:1].isupper():
        word = word.capitalize()
    parts[i] = word
    return "".join(parts)


def _partial(record: GroundingRecord, plan: Mapping | None, rng: random.Random) -> str | None:
    fields = parse_query(record.query) if plan is not None else None
    if fields is not None:
        swaps = _synthetic_swaps(fields, plan["events"])
        return query_text(rng.choice(swaps)) if swaps else None
    return swap_word(record.query, rng)


def _irrelevant(record: GroundingRecord, pool: Sequence[GroundingRecord], plan: Mapping | None,
                video_tokens: Mapping[str, list], config: PIRConfig, rng: random.Random) -> GroundingRecord | None:
    for _ in range(config.tries):
        other = pool[rng.randrange(len(pool))]
        if other.video_id == record.video_id:
            continue
        if plan is not None:
            fields = parse_query(other.query)
            if fields is None or any(matches(fields, e) for e in plan["events"]):
                continue
        elif config.max_jaccard is not None:
            query_tokens = tokens(other.query)
            if any(jaccard(query_tokens, t) > config.max_jaccard for t in video_tokens[record.video_id]):
                continue
        return other
    return None


def _negative(record: GroundingRecord, query: str, relevance: str, source_video_id: str | None = None):
    return dataclasses.replace(record, id=f"{record.id}_{relevance}", query=query, windows=(),
                               relevant_clip_ids=(), saliency_scores=(), relevance=relevance,
                               source_query=record.query, source_video_id=source_video_id)


def make_pir_samples(records: Sequence[GroundingRecord], config: PIRConfig | None = None, seed: int = 0, *,
                     facts: Mapping[str, Mapping] | None = None) -> list[GroundingRecord]:
    """Replace a share of the relevant records by irrelevant and partially irrelevant samples.

    `facts` is the synthetic set's sidecar ({vid: plan}, from `synthetic.load_facts`); videos found
    there get exact negatives, the others the text-based ones described in the module docstring.
    """
    config = config or PIRConfig()
    facts = facts or {}
    records = list(records)
    for record in records:
        if record.relevance != "relevant":
            raise ValueError(f"make_pir_samples: record {record.id!r} is already {record.relevance!r}; "
                             "pass relevant records only")
    rng = random.Random(seed)
    need_partial = round(len(records) * config.partial_fraction)
    need_irrelevant = round(len(records) * config.irrelevant_fraction)
    video_tokens: dict[str, list] = {}
    if config.max_jaccard is not None:
        for record in records:
            video_tokens.setdefault(record.video_id, []).append(tokens(record.query))
    out = list(records)
    order = list(range(len(records)))
    rng.shuffle(order)
    for i in order:
        if need_partial == 0 and need_irrelevant == 0:
            break
        record, plan = records[i], facts.get(records[i].video_id)
        if need_partial:
            query = _partial(record, plan, rng)
            if query is not None:
                out[i] = _negative(record, query, "partial")
                need_partial -= 1
                continue
        if need_irrelevant:
            other = _irrelevant(record, records, plan, video_tokens, config, rng)
            if other is not None:
                out[i] = _negative(record, other.query, "irrelevant", other.video_id)
                need_irrelevant -= 1
    return out

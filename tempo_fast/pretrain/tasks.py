"""Pretraining tasks: general vision-language questions about a synthetic clip, from its plan.

Not the grounding answer format (that is what SFT and PIR-GRPO teach): the answers are words.
Each task is a `Task(kind, question, answer, video, evidence)`:
- "timeline": "Describe the video. When does it happen?" -> the caption's events with their windows in
  seconds, "the small red circle moves: 1.1 to 3.1; ..." (the last curriculum stage: where in the
  video an event is, read off the ETA timestamps, which grounding needs);
- "caption":  "Describe the video." -> the clip's events in time order, "the small red circle moves;
  the large blue square appears" (objects that do nothing: "the small green diamond stays");
- "colour":   "What colour is the circle?" -> "red" (a shape only one object has, that object never
  changes colour);
- "shape":    "What shape is the red object?" -> "circle" (a colour only one object ever shows);
- "exists":   "Is there a red circle? Answer yes or no." -> "yes" / "no";
- "event":    "Does it happen? Answer yes or no.\\nQuery: the red circle moves" -> "yes" / "no", in the
  grounding prompt's layout (instruction, then the query line last): the comparison of a query with
  the clip that refusing needs.
Every answer is written in <answer> tags (`answer_text`): "<answer>yes</answer>", so the decision
is predicted from the `<answer` token, where the grounding answer's refusal decision is.
Negatives of the yes/no tasks are half "near" (one word of a true query swapped: colour, shape,
action, size or target colour, checked against every event with `synthetic.matches`) and half
"far" (a true query's action done by an object the clip does not have), built from the clip's own
queries so that the query text alone predicts the answer as little as possible. Answers are
balanced yes / no.

Text evidence (the curriculum's first stages): `evidence=True` writes the caption as text,
"Objects: <caption>.\\n", before the question, with (`video=True`) or without the video.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from tempo_fast.data.synthetic import COLOURS, SHAPES, SIZES, matches, query_text

YES, NO = "yes", "no"
ASK_YES_NO = "Answer yes or no."
EVENT_INSTRUCTION = f"Does it happen? {ASK_YES_NO}"  # before the query line, as the grounding instruction
CAPTION_QUESTION = "Describe the video."
TIMELINE_QUESTION = f"{CAPTION_QUESTION} When does it happen?"  # words the tiny tokenizer already has
KINDS = ("caption", "colour", "shape", "exists", "event", "timeline")
YES_NO_KINDS = ("exists", "event")


@dataclass(frozen=True)
class Task:
    """One question about one clip and the answer the model should give."""

    kind: str           # one of KINDS
    question: str       # the user text after the video (or alone, without video)
    answer: str         # the answer text (the loss is on it and <|im_end|>)
    video: bool = True  # the clip's video is in the prompt
    evidence: bool = False  # the caption is written before the question as text


def _event_text(event: dict) -> str:
    """An event of the plan as a query sentence with every attribute, "the small red circle moves"."""
    return query_text({k: event[k] for k in ("size", "colour", "shape", "action", "target")})


def caption(plan: dict) -> str:
    """The clip's events in time order as query sentences, `; `-separated."""
    events = sorted(plan["events"], key=lambda e: (e["start"], e["object"]))
    parts = [_event_text(e) for e in events]
    busy = {e["object"] for e in events}
    parts += [f"the {o['size']} {o['colours'][0]} {o['shape']} stays" for o in plan["objects"] if o["id"] not in busy]
    return "; ".join(parts)


def timeline(plan: dict) -> str | None:
    """The clip's events in time order, each with its window: "the red circle moves: 1.1 to 3.1; ..."
    (None for a clip without events)."""
    events = sorted(plan["events"], key=lambda e: (e["start"], e["object"]))
    if not events:
        return None
    return "; ".join(f"{_event_text(e)}: {e['start']:.1f} to {e['end']:.1f}" for e in events)


def _pairs(plan: dict) -> set[tuple[str, str]]:
    """Every (colour, shape) some object shows at some time."""
    return {(c, o["shape"]) for o in plan["objects"] for c in o["colours"]}


def _event_question(query: str) -> str:
    return f"{EVENT_INSTRUCTION}\nQuery: {query}"


def answer_text(answer: str) -> str:
    """What the model writes for a task's answer: the words in <answer> tags, as every answer of the
    grounding grammar is, so that a yes/no decision sits where the grounding refusal decision does
    (the token after `<answer`)."""
    return f"<answer>{answer}</answer>"


def _exists_question(colour: str, shape: str) -> str:
    return f"Is there a {colour} {shape}? {ASK_YES_NO}"


def _happens(plan: dict, fields: dict) -> bool:
    return any(matches(fields, e) for e in plan["events"])


# how often each action is a query's in the pretraining clips (move 0.48, appear 0.22, change 0.16,
# disappear 0.14): a swapped-in action is drawn by these weights, so that a query's action says as
# little about its answer as possible
_ACTION_WEIGHTS = {"move": 0.48, "appear": 0.22, "change": 0.16, "disappear": 0.14}


def _near_event_negative(plan: dict, rng: random.Random) -> dict | None:
    """A true query's fields with one word swapped so that nothing in the clip matches."""
    for _ in range(20):
        fields = dict(rng.choice(plan["queries"])["fields"])
        slot = rng.choice(["colour", "shape", "action", "size", "target"])
        if slot == "colour":
            fields["colour"] = rng.choice([c for c in COLOURS if c != fields["colour"]])
        elif slot == "shape":
            fields["shape"] = rng.choice([s for s in SHAPES if s != fields["shape"]])
        elif slot == "size" and fields["size"]:
            fields["size"] = next(s for s in SIZES if s != fields["size"])
        elif slot == "target" and fields["action"] == "change":
            fields["target"] = rng.choice([c for c in COLOURS if c not in (fields["colour"], fields["target"])])
        else:
            others = [a for a in _ACTION_WEIGHTS if a != fields["action"]]
            fields["action"] = rng.choices(others, weights=[_ACTION_WEIGHTS[a] for a in others])[0]
            fields["target"] = (rng.choice([c for c in COLOURS if c != fields["colour"]])
                                if fields["action"] == "change" else None)
        if fields["colour"] != fields["target"] and not _happens(plan, fields):
            return fields
    return None


def _far_event_negative(plan: dict, rng: random.Random) -> dict:
    """A true query's action (and size word, target) about an object the clip does not have."""
    present = _pairs(plan)
    fields = dict(rng.choice(plan["queries"])["fields"])
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present and c != fields["target"]]
    fields["colour"], fields["shape"] = rng.choice(absent)
    return fields


def event_task(plan: dict, rng: random.Random, answer: str) -> Task | None:
    """A yes/no question about one event (answer "yes": one of the clip's queries; "no": half a
    true query with one word swapped, half a true query's action done by an absent object)."""
    if not plan["queries"]:
        return None
    if answer == YES:
        return Task("event", _event_question(rng.choice(plan["queries"])["query"]), YES)
    fields = _near_event_negative(plan, rng) if rng.random() < 0.5 else None
    fields = fields or _far_event_negative(plan, rng)
    return Task("event", _event_question(query_text(fields)), NO)


def exists_task(plan: dict, rng: random.Random, answer: str) -> Task:
    """A yes/no question whether an object of a colour and shape is in the clip."""
    present = sorted(_pairs(plan))
    if answer == YES:
        return Task("exists", _exists_question(*rng.choice(present)), YES)
    absent = {(c, s) for c in COLOURS for s in SHAPES} - set(present)
    near = sorted(p for p in absent if any(p[0] == c or p[1] == s for c, s in present))
    pool = near if near and rng.random() < 0.5 else sorted(absent)
    return Task("exists", _exists_question(*rng.choice(pool)), NO)


def colour_task(plan: dict, rng: random.Random) -> Task | None:
    shapes = [o["shape"] for o in plan["objects"]]
    fit = [o for o in plan["objects"] if shapes.count(o["shape"]) == 1 and len(o["colours"]) == 1]
    if not fit:
        return None
    o = rng.choice(fit)
    return Task("colour", f"What colour is the {o['shape']}?", o["colours"][0])


def shape_task(plan: dict, rng: random.Random) -> Task | None:
    colours = [c for o in plan["objects"] for c in o["colours"]]
    fit = [o for o in plan["objects"] if len(o["colours"]) == 1 and colours.count(o["colours"][0]) == 1]
    if not fit:
        return None
    o = rng.choice(fit)
    return Task("shape", f"What shape is the {o['colours'][0]} object?", o["shape"])


def make_task(plan: dict, kind: str, rng: random.Random, *, video: bool = True, evidence: bool = False) -> Task | None:
    """One task of `kind` about `plan` (None when the clip cannot ask it), yes/no answers drawn 50/50."""
    if kind not in KINDS:
        raise ValueError(f"make_task: kind must be one of {KINDS}, got {kind!r}")
    if kind == "caption":
        task = Task("caption", CAPTION_QUESTION, caption(plan))
    elif kind == "timeline":
        text = timeline(plan)
        task = None if text is None else Task("timeline", TIMELINE_QUESTION, text)
    elif kind == "colour":
        task = colour_task(plan, rng)
    elif kind == "shape":
        task = shape_task(plan, rng)
    elif kind == "exists":
        task = exists_task(plan, rng, YES if rng.random() < 0.5 else NO)
    else:
        task = event_task(plan, rng, YES if rng.random() < 0.5 else NO)
    if task is None:
        return None
    question = f"Objects: {caption(plan)}.\n{task.question}" if evidence else task.question
    return Task(task.kind, question, task.answer, video=video, evidence=evidence)


def vocabulary_lines() -> list[str]:
    """Pretraining text for the tiny tokenizer's corpus (questions, answers, captions)."""
    lines = [CAPTION_QUESTION, ASK_YES_NO, YES, NO, " yes", " no", "Objects: ", EVENT_INSTRUCTION,
             "the green diamond stays; the red circle moves.", f"{EVENT_INSTRUCTION}\nQuery: "]
    lines += [answer_text(YES), answer_text(NO)] * 4 + [answer_text(c) for c in COLOURS] + [answer_text(s) for s in SHAPES]
    for colour in COLOURS:
        lines.append(f"What shape is the {colour} object?")
        for shape in SHAPES:
            lines.append(_exists_question(colour, shape))
            lines += [f"the {size} {colour} {shape} stays" for size in SIZES]
    lines += [f"What colour is the {shape}?" for shape in SHAPES]
    return lines

"""Answer parsing and rewards for temporal grounding: what a model wrote → windows → PIR-GRPO rewards.

The answer grammar (DESIGN.md) is `<think>…</think><answer>12.0 to 18.5</answer>`, several windows
separated by `;`, `<answer>none</answer>` for a refusal, the `<think>` part optional.
`parse_answer` reads that grammar and the many ways models stray from it; `format_answer` writes
it (SFT targets). The rewards are computed for a whole batch of answers at once: windows are
padded into `[N, K, 2]` float64 tensors and every IoU is one broadcast; each returns float32 `[N]`.

PIR reward of one answer (`pir_reward`, weights in `RewardConfig`):
    relevant pair:                    iou_weight · IoU            (a refusal earns 0)
    irrelevant / partially irrelevant: refusal_weight · [refused]  (any window earns 0)
    plus format_weight · [well_formed] for every answer.

IoU of several windows (`multi_window`):
    "best":  mean over the predicted windows of each one's best IoU with any ground-truth window
             (one predicted window: its IoU with the best-matching ground-truth window);
    "union": |∪P ∩ ∪G| / |∪P ∪ ∪G|, the IoU of the union of predicted windows with the union of
             ground-truth windows.
No predicted window (a refusal, an unreadable answer) or no ground truth gives 0, and so does a
union of length 0 (two identical instants).
Time-R1's boundary-weighted IoU (arXiv 2503.13377), `boundary_weighted=True` with "best":
    IoU(p, g) · (1 − |p_start − g_start| / duration) · (1 − |p_end − g_end| / duration),
the factors clamped at 0 and the maximum taken over ground-truth windows g.

Predicted and ground-truth windows are clipped to [0, duration] when a duration is known (some
Charades-STA windows end after the video does); a window starting at or after the duration is
dropped. Non-finite or non-positive durations and non-finite, negative or reversed ground-truth
windows raise ValueError: a reward is never NaN.
"""
from __future__ import annotations

import decimal
import enum
import math
import numbers
import re
from dataclasses import dataclass
from typing import Sequence, Union

import torch

Window = tuple[float, float]


@dataclass(frozen=True)
class Answer:
    """One parsed answer. Windows are finite, 0 ≤ start ≤ end, in the order written."""

    windows: tuple[Window, ...]  # predicted windows in seconds; empty for a refusal
    refused: bool  # the answer says that the event does not happen
    well_formed: bool  # the text is exactly in the canonical grammar (see parse_answer)

    def __post_init__(self):
        windows = tuple((float(s), float(e)) for s, e in self.windows)
        for s, e in windows:
            if not (math.isfinite(s) and math.isfinite(e) and 0.0 <= s <= e):
                raise ValueError(f"Answer: window ({s}, {e}) must be finite with 0 <= start <= end")
        if self.refused and windows:
            raise ValueError(f"Answer: a refusal has no windows, got {windows}")
        object.__setattr__(self, "windows", windows)


# ---------------------------------------------------------------- parsing

_NUM = r"(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:e[+-]?[0-9]++)?"
_UNIT = r"(?:seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)(?![a-z])"
_UNIT_SCALE = {"s": 1.0, "m": 60.0, "h": 3600.0}
# A range connector; no signs are read, so "12 - 18" and "12-18" are both ranges.
_CONNECTOR = r"(?:-++|[\u2010-\u2015\u2212~\uff5e]|(?:to|until|till|through|thru|and)(?![a-z]))"


def _time(p: str) -> str:
    """One time point, groups prefixed by `p`: h:mm:ss / mm:ss, `1m30s`, or a number with a unit."""
    return (
        rf"(?:(?P<{p}clock>[0-9]++(?::[0-9]++){{1,2}}(?:\.[0-9]++)?)"
        rf"|(?P<{p}min>[0-9]++)\s*+(?:minutes?|mins?|m)\s*+(?P<{p}sec>[0-9]++(?:\.[0-9]++)?)"
        rf"(?:\s*+(?:seconds?|secs?|s)(?![a-z]))?"
        rf"|(?P<{p}num>{_NUM})(?:\s*+(?P<{p}unit>{_UNIT}))?)"
    )


# "[12, 18]" / "(12, 18)", or "12 to 18", "12.0s - 18.5s", "0:12 ~ 0:18", "between 12 and 18".
# Possessive quantifiers keep every scan linear in the text length.
_RANGE = re.compile(
    rf"[\[(]\s*+{_time('c')}\s*+,\s*+{_time('d')}\s*+[\])]"
    rf"|(?<![0-9a-z_.:]){_time('a')}\s*+{_CONNECTOR}\s*+{_time('b')}",
    re.IGNORECASE,
)
_ANSWER_OPEN = re.compile(r"<\s*+answer\s*+>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"<\s*+/\s*+answer\s*+>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<\s*+think\s*+>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s*+/\s*+think\s*+>", re.IGNORECASE)
# A refusal: the whole answer part is a "none"-like word, or it contains a refusing phrase.
_REFUSAL_WORD = re.compile(
    r"\W*+(?:(?:final\s++)?answer\s*+:?\s*+)?(?:none|null|nil|n/a|nothing|no)\W*+", re.IGNORECASE
)
_REFUSAL_PHRASE = re.compile(
    r"\b(?:none\s++of|no\s++(?:such|relevant|matching|corresponding)|there\s++is\s++no|there\s++are\s++no"
    r"|never\s++(?:occurs?|happens?|appears?|shown)|not\s++(?:present|found|shown|visible|depicted)"
    r"|(?:cannot|can['\u2019]t|unable\s++to)\s++(?:be\s++found|find|locate|see)"
    r"|(?:does|do|did|is|are|was|were|can|could)(?:\s++not|n['\u2019]t)\s++(?:be\s++)?"
    r"(?:occur|happen|appear|exist|present|shown?|seen|visible|found|find|locate|contain|include))",
    re.IGNORECASE,
)
_DECIMAL = r"[0-9]++(?:\.[0-9]++)?"
_WELL_FORMED = re.compile(
    r"\s*+(?:<think>(?:(?!</?(?:think|answer)>).)*+</think>\s*+)?"
    rf"<answer>\s*+(?:none|{_DECIMAL}\s++to\s++{_DECIMAL}(?:\s*+;\s*+{_DECIMAL}\s++to\s++{_DECIMAL})*+)"
    r"\s*+</answer>\s*+",
    re.DOTALL,
)


def _seconds(match: re.Match, p: str) -> float:
    """The time point of group prefix `p` in seconds; NaN when it is no valid time (e.g. `1:75`)."""
    clock = match.group(p + "clock")
    if clock is not None:
        parts = [float(x) for x in clock.split(":")]
        if any(x >= 60.0 for x in parts[1:]):
            return math.nan
        total = 0.0
        for x in parts:
            total = total * 60.0 + x
        return total
    minutes = match.group(p + "min")
    if minutes is not None:
        sec = float(match.group(p + "sec"))
        return math.nan if sec >= 60.0 else float(minutes) * 60.0 + sec
    unit = match.group(p + "unit")
    return float(match.group(p + "num")) * (_UNIT_SCALE[unit[0].lower()] if unit else 1.0)


def _answer_body(text: str) -> str:
    """The part of `text` that holds the answer, tolerating missing, stray and truncated tags."""
    opens = list(_ANSWER_OPEN.finditer(text))
    if opens:  # the last <answer> block; it may be cut off before </answer>
        start = opens[-1].end()
        close = _ANSWER_CLOSE.search(text, start)
        return text[start : close.start() if close else len(text)]
    think_closes = list(_THINK_CLOSE.finditer(text))
    closes = list(_ANSWER_CLOSE.finditer(text))
    if closes:  # <answer> lost: from the end of the thinking to </answer>
        end = closes[-1].start()
        begin = max([m.end() for m in think_closes if m.end() <= end], default=0)
        return text[begin:end]
    if think_closes:
        return text[think_closes[-1].end() :]
    if _THINK_OPEN.search(text):  # cut off while thinking: there is no answer yet
        return ""
    return text


def _clip(windows, duration: float | None) -> tuple[Window, ...]:
    """Windows clipped to [0, duration]; those starting at or after the duration are dropped."""
    if duration is None:
        return tuple(windows)
    return tuple((max(s, 0.0), min(e, duration)) for s, e in windows if s < duration)


def _check_duration(duration, where: str) -> float | None:
    if duration is None:
        return None
    if isinstance(duration, torch.Tensor) and duration.numel() == 1:
        duration = duration.item()
    if not isinstance(duration, numbers.Real) or not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"{where}: duration must be a finite number > 0 seconds, got {duration!r}")
    return float(duration)


def parse_answer(text: str, duration: float | None = None) -> Answer:
    """Parse one model output into an `Answer`; never raises on any string.

    Windows are read from the answer part: the last `<answer>` block (to the end of the text when
    `</answer>` is missing), else the text between `</think>` and `</answer>`, else the text after
    `</think>`, else the whole text (nothing when the text stops inside `<think>`). A window is two
    time points joined by `to`, `-`, `–`, `~`, `until`, `through` or `and` (`between 12 and 18`),
    or written `[12, 18]`; a time point is plain seconds (`12`, `12.5`, `.5`), with a unit
    (`12s`, `12.5 seconds`, `2 min`, `1 h`), `1m30s`, `mm:ss` or `h:mm:ss`. Windows are taken
    left to right, so `;`, `,`, `and` and new lines all separate them. Reversed endpoints are
    swapped; with `duration` windows are clipped to [0, duration] and those starting at or after
    it dropped; unreadable windows (infinite, `1:75`) are dropped.

    `refused` is true when no window was read and the answer part says so: `none` in any case,
    `no`, `n/a`, or a phrase like "no such event", "does not occur", "is not shown".

    `well_formed` is true exactly when the whole text is, with only whitespace (`str.isspace`)
    around the parts: an optional `<think>…</think>` (no think/answer tags inside), then exactly
    one `<answer>…</answer>` whose body is `none` (lower case) or `A to B` items separated by `;`,
    where A and B are plain decimals (`12`, `12.5`; no sign, exponent or unit), finite as floats,
    and A ≤ B. Tags are lower case, without spaces. It does not depend on `duration`.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_answer: text must be a str, got {type(text).__name__}")
    duration = _check_duration(duration, "parse_answer")
    body = _answer_body(text)
    raw = [  # (start, end) as written, NaN/inf when unreadable; "[12, 18]" uses groups c/d
        (_seconds(m, "c"), _seconds(m, "d")) if m.group(0)[0] in "[(" else (_seconds(m, "a"), _seconds(m, "b"))
        for m in _RANGE.finditer(body)
    ]
    readable = [(min(a, b), max(a, b)) for a, b in raw if math.isfinite(a) and math.isfinite(b)]
    windows = _clip(readable, duration)
    refused = not raw and (_REFUSAL_WORD.fullmatch(body) is not None or _REFUSAL_PHRASE.search(body) is not None)
    well_formed = (
        _WELL_FORMED.fullmatch(text) is not None
        and len(readable) == len(raw)
        and all(a <= b for a, b in raw)
    )
    return Answer(windows=windows, refused=refused, well_formed=well_formed)


def _decimal(x: float, decimals: int | None) -> str:
    """`x` as a plain decimal: `decimals` digits after the point, or the shortest that reads back to x."""
    if decimals is not None:
        return f"{x:.{decimals}f}"
    return format(decimal.Decimal(repr(x)), "f")


def format_answer(windows, *, think: str | None = None, decimals: int | None = 1) -> str:
    """The canonical answer text for `windows` ((start, end) seconds) or None/empty (a refusal).

    `decimals` digits after the point (None: the shortest decimals that read back to the exact
    float). With `think`, a `<think>…</think>` part comes first. `parse_answer` of the result is
    well formed and gives back the windows (rounded to `decimals`).
    """
    if decimals is not None and (not isinstance(decimals, int) or decimals < 0):
        raise ValueError(f"format_answer: decimals must be an int >= 0 or None, got {decimals!r}")
    prefix = ""
    if think is not None:
        if re.search(r"</?(?:think|answer)>", think):
            raise ValueError(f"format_answer: think must not contain think/answer tags, got {think!r}")
        prefix = f"<think>{think}</think>"
    items = []
    for window in [] if windows is None else windows:
        if len(window) != 2:
            raise ValueError(f"format_answer: a window is (start, end), got {window!r}")
        s, e = float(window[0]), float(window[1])
        if not (math.isfinite(s) and math.isfinite(e) and 0.0 <= s <= e):
            raise ValueError(f"format_answer: window {window!r} must be finite with 0 <= start <= end")
        items.append(f"{_decimal(s, decimals)} to {_decimal(e, decimals)}")
    return f"{prefix}<answer>{'; '.join(items) if items else 'none'}</answer>"


# ---------------------------------------------------------------- rewards


class Relevance(str, enum.Enum):
    """How a query relates to its video (PIR-GRPO sample kinds)."""

    RELEVANT = "relevant"  # the event happens; ground-truth windows given
    IRRELEVANT = "irrelevant"  # a query from another video
    PARTIAL = "partial"  # the true query with one attribute, object or action changed


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the PIR-GRPO reward terms."""

    iou_weight: float = 1.0  # scale of the IoU earned by a window answer to a relevant query
    refusal_weight: float = 1.0  # earned by refusing an irrelevant or partially irrelevant query
    format_weight: float = 0.1  # added to every well-formed answer, whatever it says
    multi_window: str = "best"  # "best" (mean of each window's best IoU) or "union" (IoU of unions)
    boundary_weighted: bool = False  # Time-R1: IoU·(1−|Δstart|/duration)(1−|Δend|/duration); "best" only

    def __post_init__(self):
        for name in ("iou_weight", "refusal_weight", "format_weight"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"RewardConfig: {name} must be a finite number, got {value!r}")
        if self.multi_window not in ("best", "union"):
            raise ValueError(f"RewardConfig: multi_window must be 'best' or 'union', got {self.multi_window!r}")
        if self.boundary_weighted and self.multi_window != "best":
            raise ValueError("RewardConfig: boundary_weighted=True needs multi_window='best'")


AnswerLike = Union[Answer, str]


def _is_scalar(x) -> bool:
    return isinstance(x, numbers.Real) or (isinstance(x, torch.Tensor) and x.ndim == 0)


def _per_answer(value, n: int, name: str, is_single) -> list:
    """`value` repeated n times when it is a single value, else checked to have n entries."""
    if is_single(value):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name}: expected one value for all answers or {n} values, got {len(value)}")
    return list(value)


def _durations(durations, n: int) -> list[float | None]:
    values = _per_answer(durations, n, "durations", lambda d: d is None or _is_scalar(d))
    return [_check_duration(d, f"durations[{i}]") for i, d in enumerate(values)]


def _check_batch(answers):
    if isinstance(answers, (str, Answer)):
        raise TypeError("answers: expected a sequence of answers (Answer or str), got a single one")
    return answers


def _answers(answers: Sequence[AnswerLike], durations: list[float | None]) -> list[Answer]:
    out = []
    for a, d in zip(answers, durations):
        if isinstance(a, str):
            out.append(parse_answer(a, d))
        elif isinstance(a, Answer):
            out.append(Answer(_clip(a.windows, d), a.refused, a.well_formed) if d is not None else a)
        else:
            raise TypeError(f"answers: expected Answer or str, got {type(a).__name__}")
    return out


def _is_window_set(gt) -> bool:
    """True for one set of windows ([] or [(s, e), …]), False for one set per answer."""
    if len(gt) == 0:
        return True
    if _is_scalar(gt[0]):
        raise ValueError(f"ground_truth_windows: expected (start, end) pairs, got the number {gt[0]!r} "
                         "as a window; wrap a single window in a list: [(start, end)]")
    return len(gt[0]) > 0 and _is_scalar(gt[0][0])


def _ground_truth(gt, n: int, durations: list[float | None]) -> list[tuple[Window, ...]]:
    """One validated, clipped set of ground-truth windows per answer."""
    sets = _per_answer(gt, n, "ground_truth_windows", _is_window_set)
    out = []
    for i, (windows, d) in enumerate(zip(sets, durations)):
        checked = []
        for w in windows:
            s, e = (float(w[0]), float(w[1])) if len(w) == 2 else (math.nan, math.nan)
            if not (math.isfinite(s) and math.isfinite(e) and 0.0 <= s <= e):
                raise ValueError(
                    f"ground_truth_windows[{i}]: window {tuple(w)!r} must be (start, end), finite, 0 <= start <= end"
                )
            checked.append((s, e))
        out.append(_clip(checked, d))
    return out


def _pad(sets: list[tuple[Window, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows `[N, K, 2]` float64 (padding 0) and their mask `[N, K]`, built in one copy."""
    k = max([len(w) for w in sets], default=0) or 1
    rows = [list(w) + [(0.0, 0.0)] * (k - len(w)) for w in sets]
    windows = torch.tensor(rows, dtype=torch.float64).reshape(len(sets), k, 2)
    mask = torch.arange(k) < torch.tensor([len(w) for w in sets])[:, None]
    return windows, mask


def _merge(windows: tuple[Window, ...]) -> tuple[Window, ...]:
    """The union of windows as disjoint sorted windows."""
    merged: list[list[float]] = []
    for s, e in sorted(windows):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return tuple((s, e) for s, e in merged)


def _iou(answers: list[Answer], gt: list[tuple[Window, ...]], durations: list[float | None],
         multi_window: str, boundary_weighted: bool) -> torch.Tensor:
    if multi_window not in ("best", "union"):
        raise ValueError(f"iou_reward: multi_window must be 'best' or 'union', got {multi_window!r}")
    if boundary_weighted and multi_window != "best":
        raise ValueError("iou_reward: boundary_weighted=True needs multi_window='best'")
    if boundary_weighted and any(d is None for d in durations):
        raise ValueError("iou_reward: boundary_weighted=True needs the duration of every answer")
    if not answers:
        return torch.zeros(0, dtype=torch.float32)
    union_mode = multi_window == "union"
    pred, pmask = _pad([_merge(a.windows) if union_mode else a.windows for a in answers])
    true, gmask = _pad([_merge(g) if union_mode else g for g in gt])
    ps, pe = pred[:, :, None, 0], pred[:, :, None, 1]  # [N, P, 1]
    gs, ge = true[:, None, :, 0], true[:, None, :, 1]  # [N, 1, G]
    valid = pmask[:, :, None] & gmask[:, None, :]
    inter = (torch.minimum(pe, ge) - torch.maximum(ps, gs)).clamp(min=0.0) * valid
    if union_mode:  # merged windows are disjoint, so pairwise intersections add up
        inter_total = inter.sum((1, 2))
        union = ((pe - ps)[..., 0] * pmask).sum(1) + ((ge - gs)[:, 0] * gmask).sum(1) - inter_total
        iou = torch.where(union > 0, inter_total / torch.where(union > 0, union, 1.0), 0.0)
        return iou.float()
    union = (pe - ps) + (ge - gs) - inter
    pair = torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0) * valid
    if boundary_weighted:
        d = torch.tensor(durations, dtype=torch.float64)[:, None, None]
        pair = pair * (1 - (ps - gs).abs() / d).clamp(min=0.0) * (1 - (pe - ge).abs() / d).clamp(min=0.0)
    count = pmask.sum(1)
    best = (pair.amax(2) * pmask).sum(1)
    return torch.where(count > 0, best / count.clamp(min=1), 0.0).float()


def iou_reward(answers: Sequence[AnswerLike], ground_truth_windows, durations=None, *,
               multi_window: str = "best", boundary_weighted: bool = False) -> torch.Tensor:
    """IoU of each answer's windows with its ground truth, float32 `[N]` (module docstring).

    `ground_truth_windows`: one set of (start, end) windows for every answer (a GRPO group), or
    one set per answer. `durations`: None, one number, or one per answer; strings are parsed
    with them and windows clipped to them.
    """
    n = len(_check_batch(answers))
    d = _durations(durations, n)
    return _iou(_answers(answers, d), _ground_truth(ground_truth_windows, n, d), d, multi_window, boundary_weighted)


def format_reward(answers: Sequence[AnswerLike]) -> torch.Tensor:
    """1.0 for a well-formed answer (`parse_answer`'s definition), else 0.0; float32 `[N]`."""
    parsed = _answers(_check_batch(answers), [None] * len(answers))
    return torch.tensor([float(a.well_formed) for a in parsed], dtype=torch.float32)


def _relevance(relevance, n: int) -> list[Relevance]:
    values = _per_answer(relevance, n, "relevance", lambda r: isinstance(r, str))
    allowed = [r.value for r in Relevance]
    out = []
    for i, r in enumerate(values):
        value = r.value if isinstance(r, Relevance) else r
        if value not in allowed:
            raise ValueError(f"relevance[{i}]: expected one of {allowed}, got {r!r}")
        out.append(Relevance(value))
    return out


def refusal_reward(answers: Sequence[AnswerLike], relevance) -> torch.Tensor:
    """1.0 for a refusal of an irrelevant or partially irrelevant query, else 0.0; float32 `[N]`."""
    n = len(_check_batch(answers))
    parsed = _answers(answers, [None] * n)
    rel = _relevance(relevance, n)
    return torch.tensor([float(a.refused and r is not Relevance.RELEVANT) for a, r in zip(parsed, rel)],
                        dtype=torch.float32)


def pir_reward(answers: Sequence[AnswerLike], ground_truth_windows, relevance, durations=None,
               config: RewardConfig | None = None) -> torch.Tensor:
    """The PIR-GRPO reward of each answer, float32 `[N]` (module docstring).

    `relevance`: a `Relevance` or its string ("relevant", "irrelevant", "partial"), one for all
    answers or one per answer. A relevant answer's ground truth must not be empty; the ground
    truth of the other kinds is ignored. Other arguments as in `iou_reward`.
    """
    config = RewardConfig() if config is None else config
    n = len(_check_batch(answers))
    d = _durations(durations, n)
    parsed = _answers(answers, d)
    rel = _relevance(relevance, n)
    gt = _ground_truth(ground_truth_windows, n, d)
    for i, (r, g) in enumerate(zip(rel, gt)):
        if r is Relevance.RELEVANT and not g:
            raise ValueError(f"pir_reward: answer {i} is for a relevant query but has no ground-truth window "
                             "inside the video")
    iou = _iou(parsed, gt, d, config.multi_window, config.boundary_weighted)
    relevant = torch.tensor([r is Relevance.RELEVANT for r in rel], dtype=torch.bool)
    refused = torch.tensor([a.refused for a in parsed], dtype=torch.float32)
    well_formed = torch.tensor([a.well_formed for a in parsed], dtype=torch.float32)
    accuracy = torch.where(relevant, config.iou_weight * iou, config.refusal_weight * refused)
    return accuracy + config.format_weight * well_formed


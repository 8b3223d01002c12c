"""Tests for tempo_fast.rewards: answer parsing on realistic and hostile text, format_answer round
trips, IoU rewards against hand-computed values and a loop-and-sweep float reference, PIR rewards."""
import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_fast.rewards import (
    Answer,
    Relevance,
    RewardConfig,
    format_answer,
    format_reward,
    iou_reward,
    parse_answer,
    pir_reward,
    refusal_reward,
)

# (text, duration, windows, refused, well_formed)
PARSE_CASES = [
    ("<think>The man opens the door.</think><answer>12.0 to 18.5</answer>", None, [(12.0, 18.5)], False, True),
    ("<answer>12.0 to 18.5</answer>", None, [(12.0, 18.5)], False, True),
    ("  <think>\nhm\n</think>\n\n<answer>\n 12 to 18.5 \n</answer>\n", None, [(12.0, 18.5)], False, True),
    ("<answer>12 to 18; 30.5 to 41</answer>", None, [(12.0, 18.0), (30.5, 41.0)], False, True),
    ("<answer>12 to 18 ;30 to 40</answer>", None, [(12.0, 18.0), (30.0, 40.0)], False, True),
    ("<answer>none</answer>", None, [], True, True),
    ("<think>not in the video</think><answer>none</answer>", 30.0, [], True, True),
    ("<answer>None</answer>", None, [], True, False),
    ("<answer>NONE.</answer>", None, [], True, False),
    ("<answer>There is no such event in the video.</answer>", None, [], True, False),
    ("The described event does not occur in this video.", None, [], True, False),
    ("<answer>The person isn't shown doing that.</answer>", None, [], True, False),
    ("Answer: none", None, [], True, False),
    ("<answer>12.0s - 18.5s</answer>", None, [(12.0, 18.5)], False, False),
    ("<answer>12 to 18.5 seconds</answer>", None, [(12.0, 18.5)], False, False),
    ("<answer>from 12 to 18.5</answer>", None, [(12.0, 18.5)], False, False),
    ("<answer>between 12 and 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<answer>12.0–18.5</answer>", None, [(12.0, 18.5)], False, False),
    ("<answer>12 ~ 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<answer>[12.5, 20]</answer>", None, [(12.5, 20.0)], False, False),
    ("<answer>(3, 7.25)</answer>", None, [(3.0, 7.25)], False, False),
    ("<answer>01:05 to 01:20</answer>", None, [(65.0, 80.0)], False, False),
    ("<answer>1:02:03 - 1:02:10.5</answer>", None, [(3723.0, 3730.5)], False, False),
    ("<answer>1m30s to 2 min</answer>", None, [(90.0, 120.0)], False, False),
    ("<answer>12 s to 18 sec</answer>", None, [(12.0, 18.0)], False, False),
    ("<answer>12 to 18, 30 to 40</answer>", None, [(12.0, 18.0), (30.0, 40.0)], False, False),
    ("<answer>12 to 18 and 30 to 40</answer>", None, [(12.0, 18.0), (30.0, 40.0)], False, False),
    ("<answer>\n1. 12 to 18\n2. 30 to 40\n</answer>", None, [(12.0, 18.0), (30.0, 40.0)], False, False),
    ("<answer>18.5 to 12</answer>", None, [(12.0, 18.5)], False, False),
    ("<answer>100 to 200</answer>", 150.0, [(100.0, 150.0)], False, True),
    ("<answer>160 to 170; 10 to 20</answer>", 150.0, [(10.0, 20.0)], False, True),
    ("<answer>150 to 160</answer>", 150.0, [], False, True),
    ("The event happens at <answer>12 to 18</answer>. Hope this helps!", None, [(12.0, 18.0)], False, False),
    ("<answer>12 to 18</answer> but maybe 20 to 30", None, [(12.0, 18.0)], False, False),
    ("<think>maybe 1 to 2</think><answer>12 to 18", None, [(12.0, 18.0)], False, False),
    ("<think>maybe 1 to 2</think>12 to 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<think>maybe 1 to 2</think> The answer is 12 to 18.", None, [(12.0, 18.0)], False, False),
    ("<think>the man appears from 3 to 5 and then", None, [], False, False),
    ("<think>x</think><answer>12.0 to", None, [], False, False),
    ("The event occurs from 12 to 18 seconds.", None, [(12.0, 18.0)], False, False),
    ("<ANSWER>12 to 18</ANSWER>", None, [(12.0, 18.0)], False, False),
    ("<answer>none</answer><answer>12 to 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<think>a</think><think>b</think><answer>12 to 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<think>use <answer> tags</think><answer>12 to 18</answer>", None, [(12.0, 18.0)], False, False),
    ("<answer>12 to 18</answer> thanks", None, [(12.0, 18.0)], False, False),
    ("<answer>12 to 18</answer><think>x</think>", None, [(12.0, 18.0)], False, False),
    ("<answer>-5 to 10</answer>", None, [(5.0, 10.0)], False, False),
    ("<answer>1e400 to 5</answer>", None, [], False, False),
    ("<answer>" + "9" * 500 + " to " + "9" * 500 + "</answer>", None, [], False, False),
    ("<answer>" + "9" * 400 + ".5 to 1</answer>", None, [], False, False),
    ("<answer>1:75 to 2:00</answer>", None, [], False, False),
    ("<answer>nan to inf</answer>", None, [], False, False),
    ("<answer>12 to 18; nan to 20; 30 to 40</answer>", None, [(12.0, 18.0), (30.0, 40.0)], False, False),
    ("<answer>Qwen2.5-VL says</answer>", None, [], False, False),
    ("<answer>\u0661\u0662 to \u0661\u0668</answer>", None, [], False, False),
    ("<answer>12\u00a0to\u00a018</answer>", None, [(12.0, 18.0)], False, True),  # str.isspace()
    ("", None, [], False, False),
    ("\x00\x01\ufffd<answer>\ud800</answer>", 10.0, [], False, False),
]


@pytest.mark.parametrize("text, duration, windows, refused, well_formed", PARSE_CASES,
                         ids=[f"case{i}" for i in range(len(PARSE_CASES))])
def test_parse_realistic_outputs(text, duration, windows, refused, well_formed):
    answer = parse_answer(text, duration)
    assert len(answer.windows) == len(windows)
    assert [x for w in answer.windows for x in w] == pytest.approx([x for w in windows for x in w])
    assert answer.refused is refused
    assert answer.well_formed is well_formed


@pytest.mark.parametrize("duration", [math.nan, math.inf, -1.0, 0.0, "150"])
def test_parse_rejects_bad_duration(duration):
    with pytest.raises(ValueError, match="duration"):
        parse_answer("<answer>1 to 2</answer>", duration)


def test_parse_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        parse_answer(b"<answer>1 to 2</answer>")


def _check_invariants(answer: Answer, duration):
    assert isinstance(answer.refused, bool) and isinstance(answer.well_formed, bool)
    assert not (answer.refused and answer.windows)
    for s, e in answer.windows:
        assert math.isfinite(s) and math.isfinite(e) and 0.0 <= s <= e
        if duration is not None:
            assert e <= duration and s < duration


DURATIONS = st.none() | st.floats(min_value=1e-3, max_value=1e5)
# Fragments of real answers, so that random text often reaches the window and tag paths.
FRAGMENTS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "none", "None", " to ", "-", ";", ",", " and ",
    "12", "18.5", ".5", "1e400", "nan", "inf", "1:02", "1:02:03", "s", " seconds", "min", "[", "]",
    "(", ")", " ", "\n", "9" * 60, "no such event", "\ufffd", "\x00", "\u2013", ":", ".",
])


@settings(max_examples=300, deadline=None)
@given(text=st.text(), duration=DURATIONS)
def test_parse_never_raises_on_text(text, duration):
    _check_invariants(parse_answer(text, duration), duration)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(), duration=DURATIONS)
def test_parse_never_raises_on_decoded_bytes(data, duration):
    _check_invariants(parse_answer(data.decode("utf-8", errors="replace"), duration), duration)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(FRAGMENTS, max_size=30), duration=DURATIONS)
def test_parse_never_raises_on_answer_fragments(parts, duration):
    answer = parse_answer("".join(parts), duration)
    _check_invariants(answer, duration)
    assert parse_answer("".join(parts)).well_formed is answer.well_formed  # independent of duration


@pytest.mark.parametrize("text", [
    "9" * 200_000, "1" + " " * 200_000 + "x", "<" + " " * 100_000, "<think>" + "a" * 200_000,
    "1:" * 100_000, "1." * 100_000, "<answer>" * 20_000, "</answer></think>" * 20_000,
    "does" + " " * 100_000, "12 to 18 and " * 20_000, "1 min " * 40_000, "[" + " " * 100_000 + "1" * 1000,
])
def test_parse_is_fast_on_hostile_text(text):
    start = time.process_time()  # CPU time: what other processes on a busy machine do not stretch
    _check_invariants(parse_answer(text, 100.0), 100.0)
    assert time.process_time() - start < 2.0  # linear scans take ~0.1 s; a quadratic one takes minutes


WINDOW = st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)).map(lambda w: (min(w), max(w)))


@settings(max_examples=200, deadline=None)
@given(windows=st.lists(WINDOW, max_size=6), think=st.none() | st.text(alphabet="abc <>/\n.", max_size=20))
def test_format_answer_round_trips_exactly(windows, think):
    if think is not None and ("<think>" in think or "</think>" in think or "answer>" in think):
        think = None
    answer = parse_answer(format_answer(windows, think=think, decimals=None))
    assert answer.well_formed
    assert answer.refused is (not windows)
    assert answer.windows == tuple(windows)


@settings(max_examples=200, deadline=None)
@given(windows=st.lists(WINDOW, min_size=1, max_size=4), decimals=st.integers(0, 3))
def test_format_answer_round_trips_rounded(windows, decimals):
    answer = parse_answer(format_answer(windows, decimals=decimals))
    assert answer.well_formed and not answer.refused
    tol = 0.5 * 10.0 ** -decimals + 1e-9
    assert len(answer.windows) == len(windows)
    for (s, e), (ps, pe) in zip(windows, answer.windows):
        assert abs(ps - s) <= tol and abs(pe - e) <= tol


def test_format_answer_text():
    assert format_answer([(12, 18.5)]) == "<answer>12.0 to 18.5</answer>"
    assert format_answer([(1, 2), (3.25, 4)], decimals=2) == "<answer>1.00 to 2.00; 3.25 to 4.00</answer>"
    assert format_answer(None) == "<answer>none</answer>" == format_answer([])
    assert format_answer([(1e-7, 2.0)], decimals=None) == "<answer>0.0000001 to 2.0</answer>"
    assert format_answer(None, think="no dog") == "<think>no dog</think><answer>none</answer>"


@pytest.mark.parametrize("windows, kwargs", [
    ([(5.0, 1.0)], {}), ([(math.nan, 1.0)], {}), ([(1.0, math.inf)], {}), ([(-1.0, 1.0)], {}),
    ([(1.0, 2.0, 3.0)], {}), ([(1.0, 2.0)], {"decimals": -1}), ([(1.0, 2.0)], {"think": "<answer>"}),
])
def test_format_answer_rejects_bad_input(windows, kwargs):
    with pytest.raises(ValueError):
        format_answer(windows, **kwargs)


# ---------------------------------------------------------------- IoU


# (predicted windows, ground truth, duration, best IoU, union IoU, Time-R1 weighted IoU), by hand
IOU_CASES = [
    ([(12, 18)], [(12, 18)], 30, 1.0, 1.0, 1.0),
    ([(10, 20)], [(15, 25)], 50, 5 / 15, 5 / 15, 5 / 15 * (1 - 5 / 50) * (1 - 5 / 50)),
    ([(0, 10)], [(10, 20)], 20, 0.0, 0.0, 0.0),
    ([(0, 4)], [(1, 2)], 10, 0.25, 0.25, 0.25 * 0.9 * 0.8),
    ([(10, 20), (40, 50)], [(12, 18), (40, 44)], 150, (0.6 + 0.4) / 2, 10 / 20, (0.6 * (1 - 2 / 150) ** 2 + 0.4 * (1 - 6 / 150)) / 2),
    ([(12, 18)], [(12, 18), (40, 44)], 150, 1.0, 0.6, 1.0),
    ([(0, 10), (5, 15)], [(0, 15)], 30, (10 / 15 + 10 / 15) / 2, 1.0, (10 / 15 * (1 - 5 / 30) + 10 / 15 * (1 - 5 / 30)) / 2),
    ([(5, 5)], [(5, 5)], 10, 0.0, 0.0, 0.0),
    ([(2, 6)], [(3, 3)], 10, 0.0, 0.0, 0.0),
    ([], [(1, 2)], 10, 0.0, 0.0, 0.0),
    ([(0, 1e-308)], [(0, 1e-308)], 10, 1.0, 1.0, 1.0),  # subnormal lengths
]


@pytest.mark.parametrize("pred, gt, duration, best, union, weighted", IOU_CASES)
def test_iou_hand_computed(pred, gt, duration, best, union, weighted):
    answer = Answer(windows=pred, refused=False, well_formed=True)
    got = {
        "best": iou_reward([answer], [gt], [duration]),
        "union": iou_reward([answer], [gt], [duration], multi_window="union"),
        "weighted": iou_reward([answer], [gt], [duration], boundary_weighted=True),
    }
    for key, expected in (("best", best), ("union", union), ("weighted", weighted)):
        assert got[key].dtype == torch.float32 and got[key].shape == (1,)
        assert got[key].item() == pytest.approx(expected, abs=1e-6), key


def _ref_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _ref_best(pred, gt, duration, weighted):
    if not pred or not gt:
        return 0.0
    scores = []
    for p in pred:
        pair = [_ref_iou(p, g) * (max(0.0, 1 - abs(p[0] - g[0]) / duration) * max(0.0, 1 - abs(p[1] - g[1]) / duration)
                                  if weighted else 1.0) for g in gt]
        scores.append(max(pair))
    return sum(scores) / len(scores)


def _ref_union(pred, gt):
    """Sweep over elementary intervals between all endpoints: covered by P, by G, by both."""
    points = sorted({x for w in pred + gt for x in w})
    inter = union = 0.0
    for lo, hi in zip(points, points[1:]):
        mid = (lo + hi) / 2
        in_p = any(s <= mid <= e for s, e in pred)
        in_g = any(s <= mid <= e for s, e in gt)
        inter += (hi - lo) * (in_p and in_g)
        union += (hi - lo) * (in_p or in_g)
    return inter / union if union > 0 else 0.0


SMALL_WINDOW = st.tuples(st.floats(0, 100), st.floats(0, 100)).map(lambda w: (min(w), max(w)))


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(st.tuples(st.lists(SMALL_WINDOW, max_size=4), st.lists(SMALL_WINDOW, max_size=4)),
                      min_size=1, max_size=7))
def test_iou_matches_loop_reference(batch):
    duration = 100.0
    answers = [Answer(windows=p, refused=False, well_formed=False) for p, _ in batch]
    gts = [g for _, g in batch]
    for mode, weighted, ref in (
        ("best", False, lambda p, g: _ref_best(p, g, duration, False)),
        ("best", True, lambda p, g: _ref_best(p, g, duration, True)),
        ("union", False, _ref_union),
    ):
        got = iou_reward(answers, gts, duration, multi_window=mode, boundary_weighted=weighted)
        expected = torch.tensor([ref(p, g) for p, g in batch], dtype=torch.float64)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_iou_broadcasts_and_accepts_strings_and_tensors():
    texts = ["<answer>12 to 18</answer>", "<answer>none</answer>", "15 to 21", "garbage"]
    expected = torch.tensor([1.0, 0.0, 3 / 9, 0.0])
    torch.testing.assert_close(iou_reward(texts, [(12.0, 18.0)], 30.0), expected)
    torch.testing.assert_close(iou_reward(texts, [[(12.0, 18.0)]] * 4, [30.0] * 4), expected)
    torch.testing.assert_close(iou_reward(texts, torch.tensor([[12.0, 18.0]]), torch.tensor(30.0)), expected)
    torch.testing.assert_close(iou_reward(texts, torch.tensor([[[12.0, 18.0]]] * 4)), expected)
    assert iou_reward([], [(1.0, 2.0)]).shape == (0,)


def test_iou_clips_to_duration():
    # Charades-STA: a ground-truth window ending after the video; a prediction past the end
    got = iou_reward(["<answer>12.7 to 25</answer>", Answer(((12.7, 19.9),), False, True)], [(12.7, 19.9)], 18.58)
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0]))
    assert iou_reward(["<answer>12.7 to 25</answer>"], [(12.7, 19.9)]).item() == pytest.approx(7.2 / 12.3)


@pytest.mark.parametrize("gt, durations, kwargs, error, match", [
    ([(math.nan, 2.0)], None, {}, ValueError, "ground_truth_windows"),
    ([(1.0, math.inf)], None, {}, ValueError, "ground_truth_windows"),
    ([(3.0, 2.0)], None, {}, ValueError, "ground_truth_windows"),
    ([(-1.0, 2.0)], None, {}, ValueError, "ground_truth_windows"),
    ([1.0, 2.0], None, {}, ValueError, "wrap a single window"),
    ([[(1.0, 2.0)]] * 3, None, {}, ValueError, "expected one value for all answers or 2"),
    ([(1.0, 2.0)], math.nan, {}, ValueError, "duration"),
    ([(1.0, 2.0)], [10.0, math.inf], {}, ValueError, r"durations\[1\]"),
    ([(1.0, 2.0)], [10.0], {}, ValueError, "durations"),
    ([(1.0, 2.0)], None, {"boundary_weighted": True}, ValueError, "duration"),
    ([(1.0, 2.0)], 10.0, {"multi_window": "max"}, ValueError, "multi_window"),
    ([(1.0, 2.0)], 10.0, {"multi_window": "union", "boundary_weighted": True}, ValueError, "best"),
])
def test_iou_rejects_bad_input(gt, durations, kwargs, error, match):
    with pytest.raises(error, match=match):
        iou_reward(["1 to 2", "none"], gt, durations, **kwargs)


def test_single_answer_instead_of_list_is_rejected():
    with pytest.raises(TypeError, match="sequence"):
        iou_reward("<answer>1 to 2</answer>", [(1.0, 2.0)])
    with pytest.raises(TypeError, match="Answer or str"):
        format_reward([None])


# ---------------------------------------------------------------- format, refusal, PIR

REFUSAL = "<think>no dog here</think><answer>none</answer>"
WINDOW_ANSWER = "<think>the dog runs</think><answer>10 to 20</answer>"
MALFORMED = "the dog runs, I think around"
SLOPPY_REFUSAL = "There is no such event."
SLOPPY_WINDOW = "From 10s to 20s."
GT = [(10.0, 20.0)]
CONFIG = RewardConfig(iou_weight=1.0, refusal_weight=1.0, format_weight=0.1)

# (relevance, answer, expected reward under CONFIG with ground truth GT, duration 60)
PIR_CASES = [
    ("relevant", REFUSAL, 0.0 + 0.1),
    ("relevant", WINDOW_ANSWER, 1.0 + 0.1),
    ("relevant", MALFORMED, 0.0),
    ("relevant", SLOPPY_REFUSAL, 0.0),
    ("relevant", SLOPPY_WINDOW, 1.0),
    ("relevant", "<answer>15 to 25</answer>", 5 / 15 + 0.1),
    ("irrelevant", REFUSAL, 1.0 + 0.1),
    ("irrelevant", WINDOW_ANSWER, 0.0 + 0.1),
    ("irrelevant", MALFORMED, 0.0),
    ("irrelevant", SLOPPY_REFUSAL, 1.0),
    ("irrelevant", SLOPPY_WINDOW, 0.0),
    ("partial", REFUSAL, 1.0 + 0.1),
    ("partial", WINDOW_ANSWER, 0.0 + 0.1),
    ("partial", MALFORMED, 0.0),
    ("partial", SLOPPY_REFUSAL, 1.0),
    ("partial", SLOPPY_WINDOW, 0.0),
]


def test_pir_reward_table():
    relevance = [r for r, _, _ in PIR_CASES]
    answers = [a for _, a, _ in PIR_CASES]
    expected = torch.tensor([x for _, _, x in PIR_CASES])
    got = pir_reward(answers, GT, relevance, 60.0, CONFIG)
    assert got.dtype == torch.float32 and got.shape == (len(PIR_CASES),)
    torch.testing.assert_close(got, expected)
    # the same from Relevance members and parsed answers, one ground-truth set per answer
    parsed = [parse_answer(a) for a in answers]
    members = [Relevance(r) for r in relevance]
    torch.testing.assert_close(pir_reward(parsed, [GT] * len(answers), members, [60.0] * len(answers), CONFIG),
                               expected)


def test_pir_reward_weights_and_components():
    config = RewardConfig(iou_weight=2.0, refusal_weight=0.5, format_weight=0.25)
    got = pir_reward([WINDOW_ANSWER, REFUSAL, MALFORMED], GT, ["relevant", "partial", "irrelevant"], 60.0, config)
    torch.testing.assert_close(got, torch.tensor([2.0 + 0.25, 0.5 + 0.25, 0.0]))
    torch.testing.assert_close(format_reward([WINDOW_ANSWER, REFUSAL, MALFORMED, SLOPPY_WINDOW]),
                               torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(refusal_reward([REFUSAL, REFUSAL, SLOPPY_REFUSAL, WINDOW_ANSWER],
                                              ["relevant", "irrelevant", Relevance.PARTIAL, "partial"]),
                               torch.tensor([0.0, 1.0, 1.0, 0.0]))
    weighted = pir_reward(["<answer>12 to 20</answer>"], GT, "relevant", 40.0,
                          RewardConfig(format_weight=0.0, boundary_weighted=True))
    assert weighted.item() == pytest.approx(0.8 * (1 - 2 / 40))


def test_pir_reward_group_with_empty_ground_truth_for_irrelevant():
    got = pir_reward([REFUSAL, WINDOW_ANSWER], [], "irrelevant", None, CONFIG)
    torch.testing.assert_close(got, torch.tensor([1.1, 0.1]))


@pytest.mark.parametrize("gt, relevance, durations, match", [
    ([[], GT], ["relevant", "relevant"], 60.0, "relevant query but has no ground-truth"),
    ([(70.0, 80.0)], "relevant", 60.0, "relevant query but has no ground-truth"),
    (GT, "Relevant", 60.0, "relevance"),
    (GT, ["relevant"], 60.0, "relevance"),
    (GT, "relevant", [60.0, math.nan], "duration"),
    ([(10.0, math.nan)], "irrelevant", 60.0, "ground_truth_windows"),
])
def test_pir_reward_rejects_bad_input(gt, relevance, durations, match):
    with pytest.raises(ValueError, match=match):
        pir_reward([WINDOW_ANSWER, REFUSAL], gt, relevance, durations, CONFIG)


@pytest.mark.parametrize("kwargs", [
    {"iou_weight": math.nan}, {"format_weight": math.inf}, {"refusal_weight": "1"},
    {"multi_window": "max"}, {"multi_window": "union", "boundary_weighted": True},
])
def test_reward_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="RewardConfig"):
        RewardConfig(**kwargs)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text() | st.lists(FRAGMENTS, max_size=12).map("".join), min_size=1, max_size=6),
       relevance=st.sampled_from(list(Relevance)), duration=DURATIONS)
def test_pir_reward_is_finite_and_bounded(texts, relevance, duration):
    got = pir_reward(texts, [(0.0, 1e-3 if duration is None else duration / 2)], relevance, duration, CONFIG)
    assert torch.isfinite(got).all()
    assert ((got >= 0.0) & (got <= 1.1 + 1e-6)).all()


def test_answer_validates_its_fields():
    assert Answer([[1, 2]], False, True).windows == ((1.0, 2.0),)
    with pytest.raises(ValueError, match="window"):
        Answer([(2.0, 1.0)], False, False)
    with pytest.raises(ValueError, match="refusal"):
        Answer([(1.0, 2.0)], True, False)

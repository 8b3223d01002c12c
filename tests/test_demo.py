"""The demo end to end (`tempo-fast demo --quick`), and the evaluation numbers of
tempo_fast.train.evaluate against hand-computed values."""
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from tempo_fast.data.loaders import GroundingRecord
from tempo_fast.train.evaluate import METRIC_KEYS, baselines, evaluate_grounding, swap_videos


def record(i, windows=(), relevance="relevant", duration=10.0):
    return GroundingRecord(id=i, video_id=f"v{i}", video_path=None, duration=duration, query=f"query {i}",
                           windows=tuple(windows), relevance=relevance)


class StubEngine:
    """Answers each prompt with the text it carries, as a greedy RolloutEngine would return it."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt, num_samples):
        self.calls.append(num_samples)
        return SimpleNamespace(texts=[prompt.answer] * num_samples)


# (record, the model's answer, IoU of the first window by hand)
HAND_MADE = [
    (record(1, [(2, 6)]), "<answer>2 to 6</answer>", 1.0),
    (record(2, [(0, 4)]), "<think>early</think><answer>1 to 5</answer>", 3 / 5),
    (record(3, [(5, 10)]), "<answer>none</answer>", 0.0),                      # a false refusal
    (record(4, [(1, 2), (6, 9)]), "<answer>6 to 8; 0 to 1</answer>", 2 / 3),   # first window, best ground truth
    (record(5, [(8, 10)]), "<answer>8 to 14</answer>", 1.0),                   # clipped to the duration
    (record(6, relevance="irrelevant"), "<answer>none</answer>", None),
    (record(7, relevance="partial"), "<answer>3 to 4</answer>", None),
    (record(8, relevance="partial"), "the event is somewhere", None),          # neither window nor refusal
]


def test_evaluate_grounding_gives_hand_computed_numbers():
    records = [r for r, _, _ in HAND_MADE]
    prompts = [SimpleNamespace(duration=r.duration, answer=a) for r, a, _ in HAND_MADE]
    engine = StubEngine()
    got = evaluate_grounding(None, records, data_cfg=None, engine=engine, prompts=prompts)
    assert engine.calls == [1] * len(records)  # one greedy answer per record
    ious = [iou for _, _, iou in HAND_MADE if iou is not None]
    assert got["R1@0.5"] == pytest.approx(100 * 4 / 5)
    assert got["R1@0.7"] == pytest.approx(100 * 2 / 5)
    assert got["mIoU"] == pytest.approx(100 * sum(ious) / 5, abs=0.005)
    assert got["false_refusal"] == pytest.approx(100 * 1 / 5)
    assert got["refusal_acc"] == pytest.approx(100 * 1 / 3, abs=0.005)
    assert got["refusal_acc_irrelevant"] == 100.0 and got["refusal_acc_partial"] == 0.0
    assert got["num_relevant"] == 5 and got["num_negative"] == 3
    assert got["well_formed"] == pytest.approx(100 * 7 / 8)
    assert got["answers"] == [a for _, a, _ in HAND_MADE]


def test_evaluate_grounding_prompt_function_and_empty_kinds():
    records = [record(1, [(0, 5)]), record(2, [(5, 10)])]
    answers = {1: "<answer>0 to 5</answer>", 2: "<answer>0 to 5</answer>"}
    got = evaluate_grounding(None, records, data_cfg=None, engine=StubEngine(),
                             prompts=lambda r: SimpleNamespace(duration=r.duration, answer=answers[r.id]))
    assert got["R1@0.5"] == 50.0 and got["mIoU"] == 50.0
    assert math.isnan(got["refusal_acc"])  # no negative record
    with pytest.raises(ValueError, match="2 records but 1 prompts"):
        evaluate_grounding(None, records, data_cfg=None, engine=StubEngine(), prompts=[SimpleNamespace()])


def test_baselines_on_a_hand_made_set():
    records = [record(1, [(0, 10)]), record(2, [(0, 5)]), record(3, [(2, 3)]), record(4, relevance="irrelevant")]
    got = baselines(records)
    assert set(got) == {"whole", "random", "refuse"}
    whole = got["whole"]
    assert (whole["R1@0.5"], whole["R1@0.7"]) == (pytest.approx(200 / 3, abs=0.005), pytest.approx(100 / 3, abs=0.005))
    assert whole["mIoU"] == pytest.approx(100 * (1 + 0.5 + 0.1) / 3, abs=0.005)
    assert (whole["refusal_acc"], whole["false_refusal"]) == (0.0, 0.0)
    refuse = got["refuse"]
    assert {k: refuse[k] for k in METRIC_KEYS} == {"R1@0.5": 0.0, "R1@0.7": 0.0, "mIoU": 0.0, "refusal_acc": 100.0,
                                                   "false_refusal": 100.0}
    assert (got["random"]["refusal_acc"], got["random"]["false_refusal"]) == (0.0, 0.0)


def test_random_baseline_matches_its_expected_iou():
    # ground truth = the whole video: a random window's IoU is its length, E|U1 - U2| = 1/3 of the video;
    # IoU >= 0.5 has probability (1 - 0.5)^2 = 1/4
    records = [record(i, [(0, 7.0)], duration=7.0) for i in range(4000)]
    got = baselines(records, seed=3)["random"]
    assert got["mIoU"] == pytest.approx(100 / 3, abs=1.5)
    assert got["R1@0.5"] == pytest.approx(25.0, abs=2.0)
    assert baselines(records, seed=3)["random"] == got
    assert baselines(records, seed=4)["random"] != got


def test_swap_videos_asks_every_relevant_query_of_another_video():
    records = [GroundingRecord(id=i, video_id=f"v{i // 2}", video_path=Path(f"/videos/v{i // 2}.mp4"), duration=10.0,
                               query=f"query {i}", windows=((i, i + 1.0),)) for i in range(9)]
    records[4] = record(99, relevance="irrelevant")
    swapped = swap_videos(records, seed=1)
    assert [r.query for r in swapped] == [r.query for r in records if r.relevance == "relevant"]
    for before, after in zip([r for r in records if r.relevance == "relevant"], swapped):
        assert after.video_path != before.video_path and after.windows == before.windows
        assert after.video_path in {r.video_path for r in records}
    assert swap_videos(records, seed=1) == swapped
    assert swap_videos(records[:2]) == []  # one video: nothing to swap with


def test_prior_baseline_is_the_best_fixed_window_of_train():
    from tempo_fast.train.evaluate import best_constant_window

    train = [record(1, [(1.0, 3.0)]), record(2, [(1.0, 3.0)]), record(3, [(6.0, 9.0)]), record(9, relevance="irrelevant")]
    assert best_constant_window(train) == (1.0, 3.0)  # IoU 1 + 1 + 0 beats any window reaching (6, 9)
    # brute force over a coarse grid agrees with the vectorised search at that step
    rng = random.Random(5)
    train = [record(i, [tuple(sorted((rng.uniform(0, 8), rng.uniform(0, 8))))], duration=8.0) for i in range(40)]

    def mean_iou(a, b):
        return sum(max(0.0, min(b, g1) - max(a, g0)) / (max(b, g1) - min(a, g0)) for r in train for g0, g1 in r.windows)
    grid = [0.5 * k for k in range(17)]
    best = max(((a, b) for a in grid for b in grid if b > a), key=lambda w: mean_iou(*w))
    assert best_constant_window(train, step=0.5) == best
    held_out = [record(7, [(1.0, 3.0)], duration=2.0), record(8, relevance="irrelevant")]
    prior = baselines(held_out, train=[record(1, [(1.0, 3.0)])])["prior"]
    assert prior["mIoU"] == 50.0 and prior["refusal_acc"] == 0.0  # clipped to the 2 s video: (1, 2) vs (1, 3)
    assert "prior" not in baselines(held_out)
    with pytest.raises(ValueError, match="no relevant training record"):
        best_constant_window([record(9, relevance="irrelevant")])


def test_baselines_need_durations():
    with pytest.raises(ValueError, match="duration"):
        baselines([record(1, [(0, 1)], duration=None)])


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from tempo_fast.cli import main

    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    return code, out


def test_demo_quick_writes_metrics_and_pictures(quick_demo):
    code, out = quick_demo
    assert code == 0
    report = json.loads((out / "demo_metrics.json").read_text())
    for name in ("sft", "sft_swapped", "grpo", "grpo_swapped", "saa", "uniform", "grpo_no_pir", "no_pir"):
        assert set(METRIC_KEYS) | {"refusal_auc", "ci"} <= set(report[name]), name
        ci = report[name]["ci"]
        for key in METRIC_KEYS:
            value, (lo, hi) = report[name][key], ci[key]
            assert value is None or lo - 1e-6 <= value <= hi + 1e-6 or lo is None, (name, key)
    assert report["sft"]["refusal_auc"] is not None and 0 <= report["sft"]["refusal_auc"] <= 100
    counts = report["setup"]["eval_counts"]
    assert counts["irrelevant"] > 0 and counts["partial"] > 0
    assert set(report["seconds"]) == {"data", "train_and_evaluate", "plots", "total"}
    lanes = report["lane_seconds"]
    assert set(lanes["main"]["seconds"]) == {"sft", "grpo", "evaluate", "ablation_grpo_no_pir"}
    assert set(lanes["ablations"]["cpu_seconds"]) == {"ablation_no_pir", "ablation_uniform"}
    rows = [json.loads(line) for line in (out / "answers" / "grpo.jsonl").read_text().splitlines()]
    assert len(rows) == sum(counts.values()) and all(0 <= r["p_none"] <= 1 for r in rows)
    assert set(report["baselines"]) == {"whole", "random", "refuse", "prior"}
    for metrics in report["baselines"].values():
        assert set(METRIC_KEYS) <= set(metrics)
    assert report["baselines"]["refuse"]["refusal_acc"] in (100.0, None)
    for png in ("sft_curves.png", "grpo_curves.png", "saa.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    checkpoint = report["checkpoint"]
    assert out / "grpo" in Path(checkpoint).parents  # saved in the output folder
    assert (Path(checkpoint) / "config.json").is_file()
    assert report["ground_command"].startswith("tempo-fast ground ") and checkpoint in report["ground_command"]


def test_demo_checkpoint_runs_through_ground(quick_demo):
    from tempo_fast.infer import InferConfig, ground

    _, out = quick_demo
    report = json.loads((out / "demo_metrics.json").read_text())
    setup = report["setup"]["config"]
    video = report["ground_command"].split()[2]
    config = InferConfig(model=report["checkpoint"], num_frames=setup["num_frames"], alpha=setup["alpha"],
                         min_pixels=setup["frame_pixels"], max_pixels=setup["frame_pixels"], num_samples=0,
                         max_new_tokens=8, decode_resize=False)
    result = ground(video, "the red circle moves", config=config)
    assert set(result) >= {"windows", "refused", "answer"}



def test_demo_data_settings_reach_the_synthetic_set(tmp_path):
    from tempo_fast.demo import DemoConfig, data_config
    from tempo_fast.train.data import prepare_synthetic

    cfg = DemoConfig(out=str(tmp_path), num_videos=3, min_seconds=5.0, max_seconds=6.0, min_objects=1,
                     max_objects=1, event_scale=2.0, distractor_prob=0.0, progress=False)
    root, _, facts = prepare_synthetic(data_config(cfg))
    written = json.loads((root / "config.json").read_text())
    assert {k: written[k] for k in ("min_seconds", "max_seconds", "min_objects", "max_objects", "event_scale",
                                    "shake_prob", "brightness_prob", "cut_prob")} == {
        "min_seconds": 5.0, "max_seconds": 6.0, "min_objects": 1, "max_objects": 1, "event_scale": 2.0,
        "shake_prob": 0.0, "brightness_prob": 0.0, "cut_prob": 0.0}
    shortest = {"appear": 1.0, "disappear": 1.0, "move": 2.0, "change": 2.0}  # 2 x the base lower bounds
    events = [e for plan in facts.values() for e in plan["events"]]
    assert events
    for plan in facts.values():
        assert 5.0 - 1e-6 <= plan["duration"] <= 6.0 + 1e-6
        assert len(plan["objects"]) == 1 and plan["distractors"] == []
        for e in plan["events"]:
            assert e["end"] - e["start"] >= shortest[e["action"]] - 1 / plan["fps"] - 1e-6, e


def _comparable(report: dict, out) -> str:
    """The report without its times and machine, paths written relative to the output folder."""
    times = ("seconds", "cpu_seconds", "lane_seconds", "evaluation_seconds", "machine")
    report = {k: v for k, v in report.items() if k not in times}
    report["setup"]["config"].pop("workers")  # one process or two: the same numbers
    return json.dumps(report, sort_keys=True).replace(str(out), "OUT")


def test_demo_quick_gives_the_same_numbers_twice(quick_demo, tmp_path):
    from tempo_fast.cli import main

    _, out = quick_demo  # (two worker processes, the default)
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    first = json.loads((out / "demo_metrics.json").read_text())
    second = json.loads((tmp_path / "demo_metrics.json").read_text())
    assert _comparable(second, tmp_path) == _comparable(first, out)


def test_markdown_table_from_the_json(quick_demo, capsys):
    from tempo_fast.cli import main

    _, out = quick_demo
    path = str(out / "demo_metrics.json")
    assert main(["demo", "--markdown", path, path]) == 0
    text = capsys.readouterr().out
    assert "| PIR-GRPO (SFT + GRPO, with PIR) |" in text and "refusal AUC" in text
    assert "Stage times, wall (CPU) seconds:" in text and "Spread over 2 runs" in text
    assert not (out / "markdown").exists()


@pytest.mark.parametrize("command", [["demo", "--quick"], ["synth", "--num-videos", "2", "--workers", "1"]])
def test_missing_ffmpeg_stops_at_once_with_one_line(command, tmp_path, monkeypatch):
    from tempo_fast.cli import main

    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no ffmpeg on it
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([*command, "--out", str(out), "--no-progress"])
    message = str(info.value.code)
    assert message.startswith(f"tempo-fast {command[0]}: ffmpeg not found on PATH") and "\n" not in message
    assert "apt-get install -y ffmpeg" in message
    assert not (out / "videos").exists()  # nothing rendered, no worker started

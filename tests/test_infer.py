"""Grounding inference: candidate merging and scoring against hand-computed answers, `ground` on a
tiny clip with the tiny model, `predict` end to end (error records, resume, retries, sharding and
merge, the metrics reading its output) and the commands' argument errors."""
import json
import math
import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast import cli, infer, rollout  # noqa: E402
from tempo_fast.infer import InferConfig, merge_candidates  # noqa: E402
from tempo_fast.rewards import parse_answer  # noqa: E402
from tiny_vl import clips, tiny_name, vl  # noqa: E402,F401 (clips, vl: fixtures)

SMALL = dict(num_frames=4, min_pixels=56 * 56, max_pixels=56 * 56, num_samples=2, max_new_tokens=8,
             workers=2, prefetch=2)


def answers(*texts, duration=None):
    return [parse_answer(t, duration) for t in texts]


# ---------------------------------------------------------------- candidates


def test_merge_frequency_clusters_and_order():
    parsed = answers("<answer>10 to 20</answer>", "<answer>10.5 to 20</answer>", "<answer>30 to 40</answer>",
                     "<answer>31 to 40; 10 to 19</answer>", "<answer>none</answer>")
    # cluster A = greedy (10, 20) + (10.5, 20) [IoU .95] + (10, 19) [IoU .9]: answers 0, 1, 3 -> 3/5;
    # cluster B = (30, 40) + (31, 40) [IoU .9]: answers 2, 3 -> 2/5, window the members' mean.
    assert merge_candidates(parsed) == [[10.0, 20.0, 0.6], [30.5, 40.0, 0.4]]


def test_merge_greedy_first_even_when_less_supported():
    parsed = answers("0 to 5", "30 to 40", "30 to 40", "<answer>31 to 39</answer>")
    # (31, 39) has IoU .8 with the seed (30, 40): the cluster's window is the mean of its three members
    assert merge_candidates(parsed) == [[0.0, 5.0, 0.25], [30.333, 39.667, 0.75]]
    # without a greedy answer the clusters are ranked by score only
    assert merge_candidates(parsed, greedy_first=False)[0] == [30.333, 39.667, 0.75]


def test_merge_threshold_likelihood_and_limit():
    parsed = answers("10 to 20", "10 to 20", "14 to 24", "50 to 60", "<answer>none</answer>")
    weights = [1.0, 0.5, 0.5, 0.25, 1.0]
    # (14, 24) has IoU 6/14 < 0.5 with (10, 20): its own cluster; total weight 3.25
    got = merge_candidates(parsed, weights)
    assert got == [[10.0, 20.0, round(1.5 / 3.25, 4)], [14.0, 24.0, round(0.5 / 3.25, 4)],
                   [50.0, 60.0, round(0.25 / 3.25, 4)]]
    assert merge_candidates(parsed, weights, merge_iou=0.4)[0] == [10.0, 20.0, round(2.0 / 3.25, 4)]
    assert len(merge_candidates(parsed, weights, max_windows=2)) == 2
    with pytest.raises(ValueError, match="weights"):
        merge_candidates(parsed, weights[:2])


def test_merge_refusals_and_empty():
    assert merge_candidates(answers("<answer>none</answer>", "none")) == []
    assert merge_candidates([]) == []
    # a refusing greedy answer leaves the sampled windows, ranked by support
    assert merge_candidates(answers("none", "1 to 2", "5 to 6", "5 to 6")) == [[5.0, 6.0, 0.5], [1.0, 2.0, 0.25]]


def test_answer_likelihoods():
    logprobs = torch.tensor([[-0.1, -0.3, 0.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = infer.answer_likelihoods(logprobs, mask)
    assert got == pytest.approx([0.8187307531, 0.1353352832])


def test_config_errors():
    for bad in (dict(num_frames=3), dict(alpha=1.5), dict(score="mean"), dict(num_samples=-1),
                dict(top_p=0.0), dict(min_pixels=10, max_pixels=5), dict(dtype="float99")):
        with pytest.raises(ValueError, match="InferConfig"):
            InferConfig(**bad)


# ---------------------------------------------------------------- ground


def test_ground_tiny_shape(clips, vl):
    result = infer.ground(clips / "va.mp4", "the red circle moves", model=vl, config=InferConfig(**SMALL))
    assert set(result) == {"windows", "refused", "refusal_score", "answer", "duration", "timing"}
    assert set(result["timing"]) == set(infer.TIMING_KEYS)
    assert result["duration"] == pytest.approx(3.0, abs=0.2)
    assert isinstance(result["refused"], bool) and isinstance(result["answer"], str)
    for start, end, score in result["windows"]:
        assert 0.0 <= start <= end <= result["duration"] and 0.0 <= score <= 1.0
    json.dumps(result)


def _scripted(monkeypatch, greedy_text, sample_texts, sample_logprobs=None):
    """RolloutEngine.generate_batch returning fixed texts (one-token answers of the given log-probs)."""
    calls = []

    def generate_batch(self, prompts, num_samples, *, generators=None, greedy_rows=0):
        greedy_rows = num_samples if self.sampling.greedy else greedy_rows
        sampled = num_samples - greedy_rows
        texts = [greedy_text] * greedy_rows + list(sample_texts[:sampled])
        calls.append(num_samples)
        g = len(texts)
        lp = torch.zeros(g, 1)
        if sample_logprobs is not None and sampled:
            lp[greedy_rows:, 0] = torch.tensor(sample_logprobs[:sampled])
        return [rollout.Rollout(completion_ids=torch.zeros(g, 1, dtype=torch.long), completion_mask=torch.ones(g, 1),
                                logprobs=lp, lengths=torch.ones(g, dtype=torch.long), texts=texts,
                                timing={"prefill_s": 0.0, "decode_s": 0.0}) for _ in prompts]

    monkeypatch.setattr(rollout.RolloutEngine, "generate_batch", generate_batch)
    return calls


def test_ground_scripted_answers(clips, vl, monkeypatch):
    calls = _scripted(monkeypatch, "<think>x</think><answer>1.0 to 9.0</answer>",
                      ["<answer>1 to 8</answer>", "<answer>none</answer>", "<answer>0.2 to 0.8</answer>"])
    config = InferConfig(**{**SMALL, "num_samples": 3})
    result = infer.ground(clips / "va.mp4", "the red circle moves", model=vl, config=config)
    # the greedy window is clipped to the 3 s clip: (1, 3); (1, 8) -> (1, 3) joins it; (0.2, 0.8) alone
    end = round(result["duration"], 3)
    assert end == pytest.approx(3.0, abs=0.2)
    assert result["windows"] == [[1.0, end, 0.5], [0.2, 0.8, 0.25]]
    assert result["refused"] is False and result["refusal_score"] == pytest.approx(1 / 3, abs=1e-4)
    assert calls == [4]  # one prefill: the greedy row and 3 samples
    # likelihood scoring: answer weights exp(log-prob) = 1 (greedy), 1/2, 1, 1/4 -> total 2.75
    _scripted(monkeypatch, "<answer>1.0 to 9.0</answer>", ["<answer>1 to 8</answer>", "<answer>none</answer>",
                                                           "<answer>0.2 to 0.8</answer>"],
              [math.log(0.5), 0.0, math.log(0.25)])
    result = infer.ground(clips / "va.mp4", "the red circle moves", model=vl,
                          config=InferConfig(**{**SMALL, "num_samples": 3, "score": "likelihood"}))
    assert result["windows"] == [[1.0, end, round(1.5 / 2.75, 4)], [0.2, 0.8, round(0.25 / 2.75, 4)]]
    _scripted(monkeypatch, "<answer>none</answer>", ["<answer>none</answer>"] * 3)
    result = infer.ground(clips / "va.mp4", "a dog", model=vl, config=config)
    assert result["refused"] is True and result["refusal_score"] == 1.0 and result["windows"] == []


def test_ground_errors(clips, vl, tmp_path):
    with pytest.raises(FileNotFoundError):
        infer.ground(tmp_path / "nope.mp4", "q", model=vl)
    with pytest.raises(ValueError, match="query"):
        infer.ground(clips / "va.mp4", "  ", model=vl)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError):  # VideoError
        infer.ground(bad, "q", model=vl, config=InferConfig(**SMALL))


# ---------------------------------------------------------------- predict


def _annotations(path, vids):
    with open(path, "w") as f:
        for qid, vid in enumerate(vids):
            f.write(json.dumps({"qid": qid, "query": f"the red circle moves {qid}", "duration": 3.0, "vid": vid,
                                "relevant_windows": [[0.5, 2.0]]}) + "\n")
    return path


def _counting(monkeypatch):
    """Records (prompts, rows per prompt) of every batch the engine decodes."""
    calls = []
    real = rollout.RolloutEngine.generate_batch

    def generate_batch(self, prompts, num_samples, *, generators=None, greedy_rows=0):
        calls.append((len(prompts), num_samples))
        return real(self, prompts, num_samples, generators=generators, greedy_rows=greedy_rows)

    monkeypatch.setattr(rollout.RolloutEngine, "generate_batch", generate_batch)
    return calls


def _answered(calls) -> tuple[int, set]:
    """(queries answered, the rows per query used) from `_counting`'s calls."""
    return sum(n for n, _ in calls), {g for _, g in calls}


def test_predict_errors_resume_retry_and_eval(clips, vl, tmp_path, monkeypatch):
    from tempo_fast.metrics import evaluate_qvhighlights, read_jsonl
    from tempo_fast.video.clips import make_clip

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("va", "vb", "vc"):
        os.link(clips / f"{name}.mp4", videos / f"{name}.mp4")
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vd", "vc"])  # vd is missing
    out = tmp_path / "preds.jsonl"
    config = InferConfig(**SMALL)
    calls = _counting(monkeypatch)

    summary = infer.predict(ann, videos, model=vl, out=out, config=config, progress=False)
    assert (summary["queries"], summary["errors"], summary["skipped"]) == (4, 1, 0)
    assert _answered(calls) == (3, {3}) and summary["tokens"] > 0
    records = read_jsonl(out)
    assert [r["qid"] for r in records] == [0, 1, 2, 3]
    assert "error" in records[2] and "not found" in records[2]["error"]
    for r in records[:2] + records[3:]:
        assert set(r) >= {"qid", "query", "vid", "pred_relevant_windows", "refused", "answer"}
    scores = evaluate_qvhighlights(records, str(ann))
    assert "MR-full-mAP" in scores and "MR-full-R1@0.5" in scores

    calls.clear()
    summary = infer.predict(ann, videos, model=vl, out=out, config=config, progress=False)
    assert calls == [] and (summary["queries"], summary["skipped"]) == (0, 4)

    make_clip(videos / "vd.mp4", width=56, height=56, fps=8, seconds=3)
    summary = infer.predict(ann, videos, model=vl, out=out, config=config, progress=False, retry_errors=True)
    assert calls == [(1, 3)] and (summary["queries"], summary["errors"]) == (1, 0)
    records = read_jsonl(out)
    assert sorted(r["qid"] for r in records) == [0, 1, 2, 3] and not any("error" in r for r in records)


def test_predict_same_predictions_for_every_batch_size(clips, vl, tmp_path, monkeypatch):
    """B = 1, 3 and 8 queries per forward (and inline or threaded preparation, a token budget that
    splits batches) write the same file: each query samples from its own seeded generator."""
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vc", "va", "vb", "vd", "vc"])  # vd: missing
    texts = {}
    calls = _counting(monkeypatch)
    for size, workers, budget in ((1, 0, None), (3, 2, None), (8, 2, None), (8, 0, 200)):
        out = tmp_path / f"b{size}_w{workers}_t{budget}.jsonl"
        config = InferConfig(**{**SMALL, "batch_size": size, "workers": workers, "batch_tokens": budget})
        calls.clear()
        summary = infer.predict(ann, clips, model=vl, out=out, config=config, progress=False)
        assert (summary["queries"], summary["errors"], summary["batch_size"]) == (7, 1, size)
        assert _answered(calls) == (6, {3}) and max(n for n, _ in calls) <= size
        texts[(size, workers, budget)] = out.read_text()
    assert max(n for n, _ in calls) < 6  # the budget of 200 padded tokens split the batch of 8
    first = next(iter(texts.values()))
    assert [json.loads(line)["qid"] for line in first.splitlines()] == list(range(7))
    for key, text in texts.items():
        assert text == first, key


def test_predict_batch_failure_retries_alone(clips, vl, tmp_path, monkeypatch):
    """The model failing on one query (say, out of memory) fails its batch; the batch is answered
    again query by query and only that query gets an error record."""
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vc"])
    real = rollout.RolloutEngine.generate_batch
    bad = {}

    def generate_batch(self, prompts, num_samples, **kwargs):
        if any(p.duration == bad["duration"] for p in prompts):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, prompts, num_samples, **kwargs)

    monkeypatch.setattr(rollout.RolloutEngine, "generate_batch", generate_batch)
    bad["duration"] = infer.prepare(vl, clips / "vb.mp4", "q", InferConfig(**SMALL))["prompt"].duration
    out = tmp_path / "preds.jsonl"
    summary = infer.predict(ann, clips, model=vl, out=out, config=InferConfig(**{**SMALL, "workers": 0}),
                            progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["errors"] == 1 and [r["qid"] for r in records] == [0, 1, 2]
    assert "OutOfMemoryError" in records[1]["error"] and "error" not in records[0] and "error" not in records[2]


def test_predict_resumes_after_truncated_line(clips, vl, tmp_path, monkeypatch):
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb"])
    out = tmp_path / "preds.jsonl"
    out.write_text(json.dumps({"qid": 0, "pred_relevant_windows": [], "refused": True}) + "\n{\"qid\": 1, \"pred")
    calls = _counting(monkeypatch)
    infer.predict(ann, clips, model=vl, out=out, config=InferConfig(**{**SMALL, "num_samples": 0}), progress=False)
    assert calls == [(1, 1)]  # only qid 1 again
    assert [json.loads(line)["qid"] for line in out.read_text().splitlines()] == [0, 1]
    out.write_text('{"qid": 0}\nnot json\n{"qid": 1}\n')
    with pytest.raises(ValueError, match=":2:"):
        infer.read_predictions(out)


def test_sharded_ranks_merge_like_one_run(clips, vl, tmp_path):
    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vc", "va", "vb"])
    config = InferConfig(**SMALL)
    single = tmp_path / "single.jsonl"
    infer.predict(ann, clips, model=vl, out=single, config=config, progress=False)
    out = tmp_path / "sharded.jsonl"
    for rank in (1, 0):
        summary = infer.predict(ann, clips, model=vl, out=out, config=config, rank=rank, world_size=2,
                                progress=False)
        assert summary["queries"] == (3 if rank == 0 else 2)
    assert [json.loads(line)["qid"] for line in infer.shard_path(out, 1).read_text().splitlines()] == [1, 3]
    assert cli.main(["predict", "--out", str(out), "--merge", "--annotations", str(ann)]) == 0
    assert not infer.shard_path(out, 0).exists()
    # every query draws from its own seeded generator, so sharding does not change any answer
    assert out.read_text() == single.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, ann, videos, out, port):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    infer.predict(ann, videos, model=tiny_name(), out=out, config=InferConfig(**{**SMALL, "device": "cpu", "workers": 0}),
                  progress=False)


def test_torchrun_style_gloo_two_processes(clips, tmp_path):
    import torch.multiprocessing as mp

    ann = _annotations(tmp_path / "ann.jsonl", ["va", "vb", "vc"])
    out = tmp_path / "preds.jsonl"
    mp.spawn(_rank_main, args=(str(ann), str(clips), str(out), _free_port()), nprocs=2)
    assert [json.loads(line)["qid"] for line in out.read_text().splitlines()] == [0, 1, 2]
    assert not infer.shard_path(out, 0).exists() and not infer.shard_path(out, 1).exists()


# ---------------------------------------------------------------- commands


def test_ground_command(clips, tmp_path, capsys):
    assert cli.main(["ground", str(tmp_path / "missing.mp4"), "--query", "q"]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["ground", str(clips / "va.mp4"), "--query", " "]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli.main(["ground", str(clips / "va.mp4"), "--query", "q", "--num-frames", "3"]) == 2
    assert "num_frames" in capsys.readouterr().err
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**SMALL, "num_samples": 3, "device": "cpu", "model": tiny_name()}))
    assert cli.main(["ground", str(clips / "vb.mp4"), "--query", "the red circle moves", "--config", str(config),
                     "--num-samples", "1", "--no-decode-resize"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["duration"] == pytest.approx(4.0, abs=0.2) and set(result["timing"]) == set(infer.TIMING_KEYS)
    config.write_text(json.dumps({"frames": 4}))
    assert cli.main(["ground", str(clips / "vb.mp4"), "--query", "q", "--config", str(config)]) == 2
    assert "frames" in capsys.readouterr().err


def test_config_flags_override_file(tmp_path):
    import argparse

    from tempo_fast.commands.ground import add_infer_arguments, infer_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    add_infer_arguments(parser)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"num_frames": 8, "alpha": 0.0, "dtype": "bfloat16"}))
    args = parser.parse_args(["--config", str(path), "--num-frames", "6", "--dtype", "none", "--no-decode-resize",
                              "--out", "x"])
    assert infer_config(args) == InferConfig(num_frames=6, alpha=0.0, dtype=None, decode_resize=False)


def test_predict_command_errors(tmp_path, capsys):
    assert cli.main(["predict", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "--annotations" in capsys.readouterr().err
    assert cli.main(["predict", "--out", str(tmp_path / "p.jsonl"), "--merge"]) == 2
    assert "shards" in capsys.readouterr().err
    ann = _annotations(tmp_path / "ann.jsonl", ["va"])
    assert cli.main(["predict", "--annotations", str(ann), "--videos", str(tmp_path / "none"),
                     "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["predict", "--annotations", str(ann), "--videos", str(tmp_path), "--rank", "0",
                     "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "together" in capsys.readouterr().err

"""Training runtime: sample order, checkpoints, metrics log, lr schedule, the SFT loss and batches."""
import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from tempo_fast.train.config import DataConfig, OptimConfig, SFTConfig  # noqa: E402
from tempo_fast.train.data import GroundingSamples, SampleOrder, prepare_synthetic  # noqa: E402
from tempo_fast.train.log import MetricsLogger, plot_curves, read_metrics  # noqa: E402
from tempo_fast.train.sft import build_optimizer, collate, lr_factor, prepare_model, sft_loss  # noqa: E402


@pytest.fixture(scope="module")
def vl():
    from tempo_fast.model import load_model
    return load_model("tiny")


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    return DataConfig(root=str(tmp_path_factory.mktemp("synth")), num_videos=6, clip_size=32, num_frames=4,
                      max_samples=6, irrelevant_fraction=0.2, partial_fraction=0.2)


@pytest.fixture(scope="module")
def samples(vl, data_cfg):
    _, records, facts = prepare_synthetic(data_cfg)
    return GroundingSamples(records["train"], vl, data_cfg, facts=facts)


def test_sample_order_resumes_and_covers_epochs():
    a = SampleOrder(7, seed=3)
    first = a.take(5) + a.take(5) + a.take(9)
    assert sorted(first[:7]) == list(range(7)) and sorted(first[7:14]) == list(range(7))
    b = SampleOrder(7, seed=3)
    b.take(10)
    assert b.drawn == 10  # across the epoch boundary
    state = b.state_dict()
    c = SampleOrder(7, seed=3)
    c.load_state_dict(state)
    assert c.take(9) == first[10:]
    assert SampleOrder(7, seed=4).take(7) != first[:7]
    with pytest.raises(ValueError, match="n=7"):
        SampleOrder(8, seed=3).load_state_dict(state)


def test_samples_mix_pir_and_targets(samples):
    from tempo_fast.rewards import parse_answer
    counts = samples.counts()
    assert counts["irrelevant"] >= 1 and counts["partial"] >= 1 and sum(counts.values()) == len(samples)
    for i in range(len(samples)):
        s = samples[i]
        answer = parse_answer(s.target)
        if s.relevance == "relevant":
            assert [tuple(w) for w in answer.windows] == [(round(a, 1), round(b, 1)) for a, b in s.record.windows]
        else:
            assert s.target == "<answer>none</answer>"
        assert s.prompt.input_ids.shape[1] == s.prompt.position_ids.shape[2]


def test_lr_schedule_matches_formula():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(s, cfg, 20) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_factor(4, cfg, 20) == pytest.approx(1.0)
    assert lr_factor(12, cfg, 20) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(20, cfg, 20) == pytest.approx(0.1) and lr_factor(25, cfg, 20) == pytest.approx(0.1)


def test_hidden_states_last_is_normed(vl, samples):
    from tempo_fast.model import forward_kwargs
    prompt = samples[0].prompt
    with torch.no_grad():
        out = vl.model(**forward_kwargs(prompt), output_hidden_states=True, logits_to_keep=0)
        logits_from_hidden = out.hidden_states[-1] @ vl.lm_head.weight.T
    torch.testing.assert_close(logits_from_hidden, out.logits, atol=1e-5, rtol=1e-5)


def test_sft_loss_matches_logits_cross_entropy(vl, samples):
    """The fused loss on a padded batch equals cross-entropy of transformers' own logits, per sample."""
    from tempo_fast.model import forward_kwargs
    from tempo_fast.train.sft import target_ids
    batch_samples = [samples[i] for i in range(3)]
    batch = collate(batch_samples, vl)
    loss, n = sft_loss(vl, batch)
    total, count = 0.0, 0
    with torch.no_grad():
        for s in batch_samples:
            answer = torch.tensor([target_ids(vl, s.target)])
            ids = torch.cat([s.prompt.input_ids, answer], 1)
            k = answer.shape[1]
            pos = torch.cat([s.prompt.position_ids, (s.prompt.next_position + torch.arange(k)).expand(3, 1, k)], 2)
            kwargs = forward_kwargs(s.prompt)
            kwargs.update(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos)
            logits = vl.model(**kwargs).logits[0, -k - 1:-1].double()
            total += torch.nn.functional.cross_entropy(logits, answer[0], reduction="sum").item()
            count += k
    assert n == count == batch["n_tokens"]
    assert loss.item() == pytest.approx(total / count, rel=1e-4)
    loss.backward()
    assert vl.lm_head.weight.grad is not None
    vl.model.zero_grad(set_to_none=True)


def test_checkpoint_round_trip_atomic_and_pruned(vl, tmp_path):
    from tempo_fast.model import load_model
    model = load_model("tiny")
    prepare_model(model, SFTConfig().model)
    optimizer, scheduler = build_optimizer(model.model, OptimConfig(lr=1e-2, warmup_steps=1), 10)
    for p in model.model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    optimizer.step()
    scheduler.step()
    folder = tmp_path / "ck"
    for step in (1, 2, 3):
        save_checkpoint(folder, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                        data_state={"epoch": 0, "position": step}, config=SFTConfig(), keep=2)
    assert sorted(p.name for p in folder.glob("step_*")) == ["step_000002", "step_000003"]
    assert latest_checkpoint(folder).name == "step_000003"
    assert not list(folder.glob(".tmp*"))
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    save_checkpoint(folder, step=4, model=model, optimizer=optimizer, scheduler=scheduler,
                    data_state={"epoch": 1, "position": 0}, config=SFTConfig(), keep=2)
    (folder / "step_000005").mkdir()  # a partial folder is never picked
    other = load_model("tiny")
    prepare_model(other, SFTConfig().model)
    opt2, sched2 = build_optimizer(other.model, OptimConfig(lr=1e-2, warmup_steps=1), 10)
    torch.rand(5)
    state = load_checkpoint(latest_checkpoint(folder), model=other, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 4 and state["data_state"] == {"epoch": 1, "position": 0}
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(model.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == scheduler.last_epoch
    for s1, s2 in zip(optimizer.state.values(), opt2.state.values()):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    saved_cfg = json.loads((folder / "step_000004" / "train_config.json").read_text())
    assert saved_cfg["optim"]["lr"] == SFTConfig().optim.lr
    loaded = load_model(folder / "step_000004")  # a step folder is a loadable checkpoint
    assert loaded.min_pixels == vl.min_pixels
    with pytest.raises(FileNotFoundError, match="training_state"):
        load_checkpoint(folder / "step_000005", model=other)


def test_running_mean_skips_nans():
    import math

    from tempo_fast.train.log import running_mean

    got = running_mean([1.0, 3.0, math.nan, 5.0, 7.0], 3)
    assert got[:4] == [1.0, 2.0, 2.0, 4.0] and got[4] == 6.0
    assert math.isnan(running_mean([math.nan], 2)[0])


def test_metrics_logger_truncates_and_plots(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 6):
            log.log(step, loss=torch.tensor(1.0 / step), lr=0.1)
    with MetricsLogger(tmp_path) as log:
        log.truncate_after(3)
        log.log(4, loss=0.5)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 0.5
    assert rows[0]["loss"] == pytest.approx(1.0)
    MetricsLogger(tmp_path / "off", rank0=False).log(1, loss=1.0)
    assert not (tmp_path / "off" / "metrics.jsonl").exists()
    png = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png", ["loss", "lr"])
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "s.png", ["loss"], smooth=3,
                       log_scale=("loss",)).stat().st_size > 0
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="none of"):
        plot_curves(tmp_path / "metrics.jsonl", tmp_path / "d.png", ["reward"])


def test_metrics_logger_writes_tensorboard_scalars(tmp_path):
    """tensorboard=True: the scalars TensorBoard reads back are the JSONL's numbers (NaN and flags
    left out), and after a resume the killed run's events past the checkpoint are hidden."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with MetricsLogger(tmp_path, tensorboard=True) as log:  # a run killed after step 5, checkpoint at 3
        for step in range(1, 6):
            log.log(step, loss=torch.tensor(1.0 / step), lr=0.1, iou=math.nan, resumed=False)
    with MetricsLogger(tmp_path, tensorboard=True) as log:  # its resumption
        log.truncate_after(3)
        log.log(4, loss=0.2, lr=0.3, iou=math.nan, resumed=True)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "lr"]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    for key in ("loss", "lr"):
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == [r["step"] for r in rows] == [1, 2, 3, 4]
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in rows], rel=1e-7)  # stored as fp32
        assert [e.wall_time for e in scalars] == pytest.approx([r["time"] for r in rows], abs=1e-3)
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([1.0, 0.5, 1 / 3, 0.2], rel=1e-7)

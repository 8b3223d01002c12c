"""Evaluation statistics (tempo_fast.train.stats) against brute-force references, the model's P(none)
(tempo_fast.train.evaluate.refusal_probabilities) against a plain forward, and prompts built once
(tempo_fast.train.prompts, GroundingSamples)."""
import itertools
import math
import random

import numpy as np
import pytest

from tempo_fast.data.loaders import GroundingRecord
from tempo_fast.rewards import Answer
from tempo_fast.train.stats import bootstrap_intervals, record_ious, roc_auc


def _record(i, windows=(), relevance="relevant"):
    return GroundingRecord(id=i, video_id=f"v{i}", video_path=None, duration=10.0, query=f"q{i}",
                           windows=tuple(windows), relevance=relevance)


def _answer(window=None, refused=False):
    return Answer(windows=() if window is None else (window,), refused=refused, well_formed=True)


def test_roc_auc_equals_pairwise_count_with_ties():
    rng = random.Random(5)
    for n in (3, 17, 40):
        scores = [round(rng.random(), 1) for _ in range(n)]  # rounding makes ties
        positive = [rng.random() < 0.4 for _ in range(n)]
        positive[0], positive[1] = True, False
        pos = [s for s, p in zip(scores, positive) if p]
        neg = [s for s, p in zip(scores, positive) if not p]
        wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
        assert roc_auc(scores, positive) == pytest.approx(100 * wins / (len(pos) * len(neg)), abs=1e-9)
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_record_ious_match_the_charades_miou():
    from tempo_fast.train.evaluate import score_answers

    rng = random.Random(2)
    records, answers = [], []
    for i in range(30):
        a = rng.uniform(0, 8)
        gts = [(a, a + rng.uniform(0.5, 2))] + ([(9.0, 9.5)] if i % 3 == 0 else [])
        records.append(_record(i, gts))
        b = rng.uniform(0, 9)
        answers.append(_answer(None, refused=True) if i % 7 == 0 else _answer((b, b + rng.uniform(0.1, 3))))
    records.append(_record(99, relevance="irrelevant"))
    answers.append(_answer(None, refused=True))
    ious = record_ious(records, answers)
    assert len(ious) == 30
    got = score_answers(records, answers)
    assert 100 * ious.mean() == pytest.approx(got["mIoU"], abs=0.006)
    assert 100 * (ious >= 0.5).mean() == pytest.approx(got["R1@0.5"], abs=0.006)


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation():
    # 400 negatives refused with probability 0.8: the 95% interval is about 80 +- 1.96 sqrt(.16/400) = 80 +- 3.9
    rng = random.Random(0)
    records = [_record(i, relevance="irrelevant" if i % 2 else "partial") for i in range(400)]
    answers = [_answer(refused=rng.random() < 0.8) for _ in records]
    records.append(_record(1000, [(1, 2)]))
    answers.append(_answer((1, 2)))
    share = 100 * np.mean([a.refused for a in answers[:400]])
    ci = bootstrap_intervals(records, answers, n=2000, seed=1)
    lo, hi = ci["refusal_acc"]
    assert lo < share < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(share * (100 - share) / 400), rel=0.15)
    assert ci["R1@0.5"] == [100.0, 100.0]  # one relevant record: every resample is that record
    assert bootstrap_intervals(records, answers, n=2000, seed=1) == ci  # seeded
    assert bootstrap_intervals(records, answers, n=2000, seed=2) != ci
    with pytest.raises(ValueError, match="n must be >= 1"):
        bootstrap_intervals(records, answers, n=0)


def test_bootstrap_auc_interval_brackets_the_auc():
    rng = random.Random(3)
    records = [_record(i, [(0, 1)]) for i in range(100)] + [_record(100 + i, relevance="partial") for i in range(100)]
    p_none = [rng.random() * 0.7 for _ in range(100)] + [0.3 + rng.random() * 0.7 for _ in range(100)]
    answers = [_answer((0, 1))] * 200
    auc = roc_auc(p_none, [r.relevance != "relevant" for r in records])
    lo, hi = bootstrap_intervals(records, answers, p_none, n=500, seed=0)["refusal_auc"]
    assert lo < auc < hi and hi - lo < 20


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory):
    from tempo_fast.train.config import DataConfig
    from tempo_fast.train.data import prepare_synthetic

    cfg = DataConfig(root=str(tmp_path_factory.mktemp("synth")), num_videos=4, clip_size=32, num_frames=4,
                     min_seconds=2.0, max_seconds=3.0, min_objects=2, max_objects=2, irrelevant_fraction=0.25,
                     partial_fraction=0.25)
    _, records, facts = prepare_synthetic(cfg)
    return cfg, [r for split in records.values() for r in split], facts


@pytest.fixture(scope="module")
def vl():
    from tempo_fast.model import load_model

    return load_model("tiny-random")


def test_refusal_probability_matches_a_plain_forward(vl, clip_set):
    import torch

    from tempo_fast.model import forward_kwargs
    from tempo_fast.rewards import format_answer
    from tempo_fast.train.evaluate import record_prompts, refusal_probabilities

    cfg, records, _ = clip_set
    prompts = record_prompts(vl, records[:5], cfg)
    got = refusal_probabilities(vl, prompts, batch_size=2)  # right-padded batches of two
    refuse = vl.tokenizer(format_answer(None), add_special_tokens=False)["input_ids"]
    window = vl.tokenizer(format_answer([(3.5, 4.0)]), add_special_tokens=False)["input_ids"]
    k = next(i for i, (a, b) in enumerate(zip(refuse, window)) if a != b)
    for prompt, p in zip(prompts, got):
        kwargs = forward_kwargs(prompt)
        prefix = torch.tensor([refuse[:k]], dtype=torch.long)
        kwargs["input_ids"] = torch.cat([prompt.input_ids, prefix], dim=1)
        kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
        text = (prompt.next_position + torch.arange(k)).view(1, 1, k).expand(3, 1, k)
        kwargs["position_ids"] = torch.cat([prompt.position_ids, text], dim=2)
        with torch.no_grad():
            logits = vl.model(**kwargs).logits[0, -1].double()
        assert p == pytest.approx(float(torch.softmax(logits, -1)[refuse[k]]), rel=1e-4, abs=1e-7)


def test_samples_are_built_once_and_share_a_videos_pixels(vl, clip_set):
    from tempo_fast.model import build_prompt
    from tempo_fast.train.data import GroundingSamples, sample_frames
    from tempo_fast.train.prompts import shared_prompt_cache

    cfg, records, facts = clip_set
    samples = GroundingSamples(records, vl, cfg, facts=facts)
    first = [samples[i] for i in range(len(samples))]
    assert all(samples[i] is first[i] for i in range(len(samples)))  # repeat access: the same object
    assert samples[-1] is first[-1]
    by_video = {}
    for s in first:
        by_video.setdefault(str(s.record.video_path), []).append(s.prompt.pixel_values_videos)
    assert any(len(v) > 1 for v in by_video.values())
    for tensors in by_video.values():
        assert all(t is tensors[0] for t in tensors)
    for s in first[:3]:  # equal to a prompt built from scratch
        fresh = build_prompt(vl, sample_frames(s.record.video_path, cfg), s.record.query, min_pixels=cfg.min_pixels,
                             max_pixels=cfg.max_pixels)
        for name in ("input_ids", "position_ids", "pixel_values_videos", "video_grid_thw"):
            assert (getattr(fresh, name) == getattr(s.prompt, name)).all(), name
    with shared_prompt_cache() as cache:  # two sets share prompts only inside the context
        a = GroundingSamples(records, vl, cfg, facts=facts)[0]
        b = GroundingSamples(records, vl, cfg, facts=facts)[0]
        assert a.prompt is b.prompt and len(cache.prompts) == 1
    assert GroundingSamples(records, vl, cfg, facts=facts)[0].prompt is not a.prompt

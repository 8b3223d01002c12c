"""The batched rollout engine (B prompts x G samples per forward) against the one-prompt engine:
with G >= 8 rows per prompt bitwise the same tokens and log-probs (batch-invariant attention,
rollout/invariant.py); with fewer rows, or the masked path (batch_invariant=False), the same
tokens and log-probs equal to float rounding (the engine docstring says why). For greedy and
sampled decoding, prompts of mixed lengths (different videos, frame counts, frame sizes and
queries), a prompt right-padded or not, every place in the batch, shared and per-prompt
generators, finished rows dropped or kept, and a Qwen3-VL. The one-prompt engine itself is
checked against transformers in test_rollout.py."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.rollout import RolloutEngine, SamplingConfig, pad_prompts, plan_batches  # noqa: E402
from tiny_vl import random_frames, tiny_name, tiny_qwen3_vl  # noqa: E402

SAMPLED = SamplingConfig(max_new_tokens=10, temperature=1.3, top_k=60, top_p=0.95)
GREEDY = SamplingConfig(max_new_tokens=10, greedy=True)
LOGPROB_TOL = dict(atol=1e-4, rtol=1e-4)  # 6.9e-5 seen on a log-prob of ~2 in the parallel suite (G < 8)


@pytest.fixture(scope="module")
def vl():
    from tempo_fast.model import load_model
    vl = load_model(tiny_name())
    with torch.no_grad():  # sharper than the random preset's nearly flat logits (see test_rollout.py)
        vl.lm_head.weight.mul_(20)
    return vl


# (seed, frames, side, query): 4 or 8 frames of 56 or 112 pixels -> 4 to 32 video tokens per
# patch; prompt lengths differ by video and query.
SPECS = [(0, 4, 56, "the red circle moves"),
         (1, 8, 112, "a long query about the small blue square that slowly turns into a red one"),
         (2, 4, 112, "the circle"),
         (3, 8, 56, "a green triangle appears"),
         (4, 4, 56, "the big yellow star shrinks then grows again")]


def _prompts(vl, specs=SPECS):
    from tempo_fast.model import build_prompt
    return [build_prompt(vl, random_frames(seed, num, side), query, min_pixels=side * side, max_pixels=side * side)
            for seed, num, side, query in specs]


@pytest.fixture(scope="module")
def prompts(vl):
    out = _prompts(vl)
    assert len({p.length for p in out}) == len(out), "the prompts must differ in length"
    return out


def _gens(seeds):
    return [torch.Generator().manual_seed(100 + s) for s in seeds]


def _assert_same(got, want, exact=False):
    """Rollouts `got` equal `want`: tokens, lengths, masks, texts exactly; log-probs bitwise when
    `exact`, else to float rounding."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.lengths.tolist() == b.lengths.tolist()
        assert torch.equal(a.completion_ids, b.completion_ids)
        assert torch.equal(a.completion_mask, b.completion_mask)
        assert a.texts == b.texts
        if exact:
            assert torch.equal(a.logprobs, b.logprobs)
        torch.testing.assert_close(a.logprobs, b.logprobs, **LOGPROB_TOL)
        assert (a.logprobs[a.completion_mask == 0] == 0).all()


def _one_by_one(vl, prompts, sampling, G, seeds, greedy_rows=0, **engine_kw):
    engine = RolloutEngine(vl, sampling, **engine_kw)
    return [engine.generate(p, G, generator=g, greedy_rows=greedy_rows) for p, g in zip(prompts, _gens(seeds))]


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("G", [8, 3])
def test_batch_equals_one_prompt_engine(vl, prompts, sampling, G):
    seeds = range(len(prompts))
    want = _one_by_one(vl, prompts, sampling, G, seeds)
    for size in (2, 5):
        engine = RolloutEngine(vl, sampling, batch_size=size)
        _assert_same(engine.generate_many(prompts, G, generator=_gens(seeds)), want, exact=G >= 8)


def test_masked_path_equals_one_prompt_engine(vl, prompts):
    """batch_invariant=False: one masked attention call over the padded cache; same tokens here,
    log-probs to rounding (not bitwise: other key slots, other sum blocking)."""
    seeds = range(len(prompts))
    want = _one_by_one(vl, prompts, SAMPLED, 8, seeds)
    got = RolloutEngine(vl, SAMPLED, batch_invariant=False).generate_many(prompts, 8, generator=_gens(seeds))
    _assert_same(got, want)
    assert any(not torch.equal(a.logprobs, b.logprobs) for a, b in zip(got, want))  # the bitwise test is not vacuous


def test_padding_and_place_in_batch_do_not_change_answers(vl, prompts):
    """Prompt 2 (the shortest) alone, first, last and in the middle of a batch whose longest prompt
    pads it; the longest prompt (never padded) likewise."""
    engine = RolloutEngine(vl, SAMPLED)
    short = min(range(len(prompts)), key=lambda i: prompts[i].length)
    long = max(range(len(prompts)), key=lambda i: prompts[i].length)
    alone = {i: engine.generate(prompts[i], 8, generator=_gens([i])[0]) for i in (short, long)}
    others = [i for i in range(len(prompts)) if i not in (short, long)]
    for order in ([short, long, *others], [long, *others, short], [others[0], short, long]):
        batch = engine.generate_batch([prompts[i] for i in order], 8, generators=_gens(order))
        for i, rollout in zip(order, batch):
            if i in alone:
                _assert_same([rollout], [alone[i]], exact=True)


def test_shared_generator_equals_sequential_calls(vl, prompts):
    """One generator for every prompt: each prompt draws its whole block in turn, so batching does
    not move any prompt's draws (even when rows stop early)."""
    engine = RolloutEngine(vl, SAMPLED)
    gen = torch.Generator().manual_seed(9)
    want = [engine.generate(p, 2, generator=gen) for p in prompts]
    got = RolloutEngine(vl, SAMPLED, batch_size=3).generate_many(prompts, 2, generator=torch.Generator().manual_seed(9))
    _assert_same(got, want)


def test_greedy_rows_in_a_batch(vl, prompts):
    G = 4
    seeds = range(3)
    want = _one_by_one(vl, prompts[:3], SAMPLED, G, seeds, greedy_rows=1)
    got = RolloutEngine(vl, SAMPLED).generate_many(prompts[:3], G, generator=_gens(seeds), greedy_rows=1)
    _assert_same(got, want)
    greedy = RolloutEngine(vl, GREEDY).generate_many(prompts[:3], 1)
    for rollout, ref in zip(got, greedy):
        n = int(ref.lengths[0])
        assert rollout.completion_ids[0, :n].tolist() == ref.completion_ids[0, :n].tolist()


def test_dropping_finished_rows(vl, prompts):
    """Rows stop at different steps (EOS lifted to just below each row's top logit): dropping the
    finished rows (as soon as half have stopped, or at once) gives what keeping them gives, in
    fewer row-steps."""
    eos = vl.eos_token_ids[0]

    def lift_eos(module, inputs, output):
        output = output.clone()
        output[..., eos] = output.amax(-1) - 1.0
        return output

    G, sampling, seeds = 4, SamplingConfig(max_new_tokens=12, temperature=1.0), range(len(prompts))
    handle = vl.lm_head.register_forward_hook(lift_eos)
    try:
        keep = RolloutEngine(vl, sampling, batch_invariant=False, compact_below=0.0, batch_size=5)
        want = keep.generate_many(prompts, G, generator=_gens(seeds))
        lengths = [int(n) for r in want for n in r.lengths]
        assert min(lengths) < max(lengths), f"rows must stop at different steps, got {lengths}"
        assert want[0].timing["row_steps"] == want[0].timing["steps"] * G * len(prompts)
        for share in (0.5, 1.0):
            got = RolloutEngine(vl, sampling, batch_invariant=False, compact_below=share, batch_size=5).generate_many(
                prompts, G, generator=_gens(seeds))
            _assert_same(got, want)
            assert got[0].timing["row_steps"] < want[0].timing["row_steps"]
        alone = _one_by_one(vl, prompts, sampling, G, seeds)
    finally:
        handle.remove()
    _assert_same(alone, want)


def _lift_eos(vl, amplitude: float, offset: float):
    """A hook making EOS's logit amax + amplitude * sin(3 * logit of token 3) + offset, row by row:
    rows (and whole prompts) then stop at different steps."""
    eos = vl.eos_token_ids[0]

    def hook(module, inputs, output):
        output = output.clone()
        output[..., eos] = output.amax(-1) + amplitude * torch.sin(output[..., 3] * 3.0) + offset
        return output

    return vl.lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("sampling,G,lift", [
    (SamplingConfig(max_new_tokens=12, greedy=True), 8, (1.0, 0.0)),
    (SamplingConfig(max_new_tokens=12, greedy=True), 1, (1.0, 0.0)),
    (SamplingConfig(max_new_tokens=12, temperature=1.0), 8, (1.5, -1.5)),
    (SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=40), 3, (1.5, -1.5))],
    ids=["greedy-G8", "greedy-G1", "sampled-G8", "sampled-G3"])
def test_dropping_finished_prompts(vl, prompts, sampling, G, lift):
    """Batch-invariant mode drops a prompt once all its G rows have stopped (the others keep all
    their rows): the same tokens and log-probs as the one-prompt engine (bitwise with G >= 8) and
    as keeping every prompt to the end (compact_below=0), in fewer row-steps."""
    seeds = range(len(prompts))
    handle = _lift_eos(vl, *lift)
    try:
        alone = _one_by_one(vl, prompts, sampling, G, seeds)
        kept = RolloutEngine(vl, sampling, batch_size=5, compact_below=0.0).generate_many(
            prompts, G, generator=_gens(seeds))
        engine = RolloutEngine(vl, sampling, batch_size=5)
        assert engine.batch_invariant
        dropped = engine.generate_many(prompts, G, generator=_gens(seeds))
        pair = RolloutEngine(vl, sampling, batch_size=2).generate_many(prompts, G, generator=_gens(seeds))
    finally:
        handle.remove()
    ends = [int(r.lengths.max()) for r in alone]
    assert len(set(ends)) >= 3 and min(ends) < sampling.max_new_tokens, f"prompts must end at different steps: {ends}"
    for got in (kept, dropped, pair):
        _assert_same(got, alone, exact=G >= 8)
    _assert_same(dropped, kept, exact=G >= 8)
    assert kept[0].timing["row_steps"] == kept[0].timing["steps"] * G * len(prompts)
    # dropped: each prompt decodes until its own last row stops
    assert dropped[0].timing["row_steps"] == G * sum(ends)
    assert dropped[0].timing["row_steps"] < kept[0].timing["row_steps"]


@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 4, 16), (4, 2, 16), (28, 4, 24)])
def test_decode_attention_on_views_equals_copies(heads, kv_heads, dim):
    """Batch-invariant decode attention (strided cache views, sdpa's enable_gqa) gives bitwise what
    sdpa gives on contiguous copies of each prompt's slots with repeated GQA heads (what the
    prompt alone gets), and matches a float64 softmax reference."""
    from tempo_fast.rollout import invariant

    gen = torch.Generator().manual_seed(heads + kv_heads + dim)
    lengths, G, step, capacity = [37, 5, 64, 1], 3, 6, 80
    width, rows = max(lengths), len(lengths) * G
    key = torch.randn(rows, kv_heads, capacity, dim, generator=gen)
    value = torch.randn(rows, kv_heads, capacity, dim, generator=gen)
    query = torch.randn(rows, 1, heads, dim, generator=gen).transpose(1, 2)  # transformers' layout
    scale = dim ** -0.5
    def attend(keys, values):
        token = invariant._PLAN.set(invariant.decode_plan(lengths, G, width, step))
        try:
            return invariant.rows_attention(None, query, keys, values, None, scaling=scale)[0]
        finally:
            invariant._PLAN.reset(token)

    out = attend(key, value)
    assert out.shape == (rows, 1, heads, dim)
    n_rep = heads // kv_heads
    for b, n in enumerate(lengths):
        r = slice(b * G, (b + 1) * G)
        slots = torch.arange(width - n, width + step + 1)  # right-aligned prompt keys, then generated ones
        k = key[r].index_select(2, slots).repeat_interleave(n_rep, 1)
        v = value[r].index_select(2, slots).repeat_interleave(n_rep, 1)
        want = torch.nn.functional.scaled_dot_product_attention(query[r].contiguous(), k, v, scale=scale)
        assert torch.equal(out[r].transpose(1, 2), want), f"prompt {b} (L={n}) differs from the copied keys"
        weights = torch.softmax(query[r].double() @ k.double().transpose(-1, -2) * scale, -1)
        torch.testing.assert_close(out[r].transpose(1, 2).double(), weights @ v.double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        attend(key[:-1], value[:-1])


def test_qwen3_vl_batch_equals_one_prompt_engine():
    from tempo_fast.model import build_prompt

    vl = tiny_qwen3_vl()
    prompts = [build_prompt(vl, random_frames(seed, num, side), query, min_pixels=side * side, max_pixels=side * side)
               for seed, num, side, query in [(0, 4, 64, "the red circle moves"), (1, 8, 128, "a blue square"),
                                              (2, 4, 128, "the small green triangle turns yellow")]]
    assert len({p.length for p in prompts}) == 3
    for sampling in (GREEDY, SAMPLED):
        want = _one_by_one(vl, prompts, sampling, 8, range(3))
        got = RolloutEngine(vl, sampling).generate_many(prompts, 8, generator=_gens(range(3)))
        _assert_same(got, want, exact=True)


def test_one_vision_pass_per_batch(vl, prompts):
    calls = []
    handle = vl.model.model.visual.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(int(kwargs["grid_thw"].shape[0])), with_kwargs=True)
    try:
        RolloutEngine(vl, SamplingConfig(max_new_tokens=3), batch_size=3).generate_many(prompts, 2)
    finally:
        handle.remove()
    assert calls == [3, 2]  # two forwards: 3 videos, then 2


def test_pad_prompts_layout(vl, prompts):
    batch = pad_prompts(prompts[:3], vl.pad_token_id, vl.device)
    width = max(p.length for p in prompts[:3])
    assert batch.input_ids.shape == (3, width) and batch.position_ids.shape == (3, 3, width)
    for b, p in enumerate(prompts[:3]):
        n = p.length
        assert torch.equal(batch.input_ids[b, :n], p.input_ids[0])
        assert (batch.input_ids[b, n:] == vl.pad_token_id).all()
        assert torch.equal(batch.position_ids[:, b, :n], p.position_ids[:, 0])
    assert torch.equal(batch.video_grid_thw, torch.cat([p.video_grid_thw for p in prompts[:3]]))
    assert batch.pixel_values_videos.shape[0] == sum(p.pixel_values_videos.shape[0] for p in prompts[:3])
    with pytest.raises(ValueError, match="no prompts"):
        pad_prompts([], 0, vl.device)


def test_plan_batches():
    assert plan_batches([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]
    # budget 30 padded tokens: [10, 12] -> 24; + 3 -> 36 > 30; [3, 9, 9] -> 27; [40] alone (over budget)
    assert plan_batches([10, 12, 3, 9, 9, 40, 1], 8, 30) == [[0, 1], [2, 3, 4], [5], [6]]
    assert plan_batches([], 4) == []
    for bad in (dict(batch_size=0), dict(batch_size=2, batch_tokens=0)):
        with pytest.raises(ValueError, match="batch_"):
            plan_batches([1], **bad)


def test_bad_generators_raise(vl, prompts):
    engine = RolloutEngine(vl, GREEDY)
    with pytest.raises(ValueError, match="generators"):
        engine.generate_many(prompts[:2], 2, generator=[None])
    with pytest.raises(ValueError, match="batch_size"):
        RolloutEngine(vl, GREEDY, batch_size=0)

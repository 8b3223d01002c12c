"""Tests of tempo_fast.rollout against independent references: transformers' `generate`, an
unshared per-sample prefill/decode loop on a DynamicCache, a teacher-forced forward pass, and
transformers' logits warpers for the sampling distribution. All on the tiny preset, CPU, fp32."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.rollout import RolloutEngine, SamplingConfig, draw_uniforms, sample_tokens  # noqa: E402
from tiny_vl import random_frames as _frames, tiny_name, tiny_qwen3_vl as _tiny_qwen3_vl  # noqa: E402

ANSWER = "1.0 to 2.0</answer>"


@pytest.fixture(scope="module")
def vl():
    from tempo_fast.model import load_model
    vl = load_model(tiny_name())
    # The random preset's logits are nearly flat (std ~0.16) and move by ~5e-4 when a rotary id
    # is off by one; a 20x sharper head (untied from the embeddings) makes the log-prob
    # comparisons below sensitive to such errors and the sampled distributions non-trivial.
    assert not vl.model.config.tie_word_embeddings
    with torch.no_grad():
        vl.lm_head.weight.mul_(20)
    return vl


def _prompt(vl, query="the red circle moves", seed=0, timestamps=True, device=None):
    from tempo_fast.model import build_prompt
    return build_prompt(vl, _frames(seed), query, min_pixels=56 * 56, max_pixels=56 * 56,
                        timestamps=timestamps, device=device)


@pytest.fixture(scope="module")
def prompt(vl):
    return _prompt(vl)


def _extend_positions(prompt, n: int) -> torch.Tensor:
    """Prompt position ids followed by n text ids from next_position on all three axes."""
    tail = prompt.next_position + torch.arange(n, device=prompt.position_ids.device)
    return torch.cat([prompt.position_ids, tail.view(1, 1, n).expand(3, 1, n)], dim=-1)


def _teacher_forced_logprobs(vl, prompt, completion: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of `completion` `[n]` after `prompt`, from one full forward pass."""
    n = completion.numel()
    ids = torch.cat([prompt.input_ids, completion.view(1, n).to(prompt.input_ids.device)], dim=1)
    with torch.no_grad():
        logits = vl.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=_extend_positions(prompt, n),
                          pixel_values_videos=prompt.pixel_values_videos, video_grid_thw=prompt.video_grid_thw).logits
    length = prompt.input_ids.shape[1]
    logps = torch.log_softmax(logits[0, length - 1:length - 1 + n].double() / temperature, -1)
    return logps.gather(-1, ids[0, length:, None].to(logps.device))[:, 0]


# ---------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("timestamps", [True, False])
def test_greedy_equals_transformers_generate(vl, timestamps):
    from tempo_fast.model import forward_kwargs

    prompt = _prompt(vl, timestamps=timestamps)
    # generate() continues explicit position ids from the last one + 1: the same as next_position.
    assert int(prompt.position_ids[0, 0, -1]) + 1 == prompt.next_position
    new = 16
    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=new, greedy=True))
    out = engine.generate(prompt, 3)
    with torch.no_grad():
        ref = vl.model.generate(**forward_kwargs(prompt), do_sample=False, max_new_tokens=new,
                                eos_token_id=vl.eos_token_ids, pad_token_id=vl.pad_token_id)
    ref = ref[0, prompt.input_ids.shape[1]:]
    n = int(out.lengths[0])
    assert n == min(new, ref.numel())
    for g in range(3):
        assert out.completion_ids[g, :n].tolist() == ref[:n].tolist()
    torch.testing.assert_close(out.logprobs[0, :n].double(), _teacher_forced_logprobs(vl, prompt, ref[:n], 1.0),
                               atol=1e-4, rtol=1e-4)


def test_qwen3_vl_greedy_equals_transformers_generate():
    from tempo_fast.model import build_prompt, forward_kwargs

    vl = _tiny_qwen3_vl()
    data, pts = _frames(0, side=64)
    prompt = build_prompt(vl, (data, pts), "the red circle moves", min_pixels=64 * 64, max_pixels=64 * 64)
    assert int(prompt.position_ids[0, 0, -1]) + 1 == prompt.next_position
    out = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, greedy=True)).generate(prompt, 2)
    with torch.no_grad():
        ref = vl.model.generate(**forward_kwargs(prompt), do_sample=False, max_new_tokens=12)
    ref = ref[0, prompt.input_ids.shape[1]:].tolist()
    n = int(out.lengths[0])
    assert n == min(12, len(ref)) and out.completion_ids[:, :n].tolist() == [ref[:n]] * 2


def test_top_k1_and_cold_temperature_equal_greedy(vl, prompt):
    greedy = RolloutEngine(vl, SamplingConfig(max_new_tokens=10, greedy=True)).generate(prompt, 1)
    ids = greedy.completion_ids[0]
    for config in (SamplingConfig(max_new_tokens=10, top_k=1, temperature=1.7),
                   SamplingConfig(max_new_tokens=10, temperature=1e-4)):
        out = RolloutEngine(vl, config).generate(prompt, 8, generator=torch.Generator().manual_seed(3))
        assert (out.completion_ids == ids).all(), config


# ---------------------------------------------------------------------------- sampling


def _unshared_rollout(vl, prompt, sampling: SamplingConfig, num: int, seed: int):
    """G separate prefills and DynamicCache decodes consuming the engine's draws: a [max_new, G]
    block of uniforms drawn first, row s for step s. Stops by decoding the whole completion text."""
    from transformers import DynamicCache

    from tempo_fast.model import forward_kwargs

    gen = torch.Generator().manual_seed(seed)
    draws = torch.rand(sampling.max_new_tokens * num, generator=gen).view(sampling.max_new_tokens, num)
    caches, logits = [], []
    with torch.no_grad():
        for _ in range(num):
            cache = DynamicCache(config=vl.model.config)
            logits.append(vl.model(**forward_kwargs(prompt), past_key_values=cache, use_cache=True).logits[:, -1])
            caches.append(cache)
        seqs, logps, alive = [[] for _ in range(num)], [[] for _ in range(num)], [True] * num
        for step in range(sampling.max_new_tokens):
            if not any(alive):
                break
            u = draws[step]
            for g in range(num):
                if not alive[g]:
                    continue
                token, logp = sample_tokens(logits[g], sampling, u[g:g + 1])
                seqs[g].append(int(token))
                logps[g].append(float(logp))
                text = vl.tokenizer.decode(seqs[g], skip_special_tokens=False)
                if int(token) in vl.eos_token_ids or any(s in text for s in sampling.stop_strings):
                    alive[g] = False
                    continue
                position = torch.full((3, 1, 1), prompt.next_position + step, dtype=torch.long)
                logits[g] = vl.model(input_ids=token.view(1, 1), position_ids=position, past_key_values=caches[g],
                                     use_cache=True).logits[:, -1]
    return seqs, logps


@pytest.mark.parametrize("num", [1, 8])
def test_shared_prefill_equals_unshared_with_same_draws(vl, prompt, num):
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.3, top_k=60, top_p=0.95)
    out = RolloutEngine(vl, sampling).generate(prompt, num, generator=torch.Generator().manual_seed(11))
    seqs, logps = _unshared_rollout(vl, prompt, sampling, num, seed=11)
    assert out.completion_ids.shape == (num, max(len(s) for s in seqs))
    for g in range(num):
        n = len(seqs[g])
        assert int(out.lengths[g]) == n
        assert out.completion_ids[g, :n].tolist() == seqs[g]
        torch.testing.assert_close(out.logprobs[g, :n], torch.tensor(logps[g]), atol=1e-5, rtol=1e-5)


def test_greedy_rows_share_the_prefill_with_sampled_rows(vl, prompt):
    """Row 0 greedy + 5 sampled rows from one prefill equal a greedy run and the same sampled run."""
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.3, top_k=60, top_p=0.95)
    mixed = RolloutEngine(vl, sampling).generate(prompt, 6, generator=torch.Generator().manual_seed(5), greedy_rows=1)
    greedy = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, greedy=True)).generate(prompt, 1)
    sampled = RolloutEngine(vl, sampling).generate(prompt, 6, generator=torch.Generator().manual_seed(5))
    n = int(greedy.lengths[0])
    assert int(mixed.lengths[0]) == n and mixed.completion_ids[0, :n].tolist() == greedy.completion_ids[0, :n].tolist()
    torch.testing.assert_close(mixed.logprobs[0, :n], greedy.logprobs[0, :n])
    for g in range(1, 6):
        m = int(sampled.lengths[g])
        assert mixed.completion_ids[g, :m].tolist() == sampled.completion_ids[g, :m].tolist()
    with pytest.raises(ValueError, match="greedy_rows"):
        RolloutEngine(vl, sampling).generate(prompt, 2, greedy_rows=3)


def test_logprobs_equal_teacher_forced_forward(vl, prompt):
    sampling = SamplingConfig(max_new_tokens=14, temperature=0.7, top_p=0.9)
    out = RolloutEngine(vl, sampling).generate(prompt, 4, generator=torch.Generator().manual_seed(5))
    for g in range(4):
        n = int(out.lengths[g])
        ref = _teacher_forced_logprobs(vl, prompt, out.completion_ids[g, :n], 0.7)
        torch.testing.assert_close(out.logprobs[g, :n].double(), ref, atol=1e-4, rtol=1e-4)
        assert (out.logprobs[g, n:] == 0).all()


SAMPLER_CASES = [
    dict(temperature=1.0),
    dict(temperature=0.6, top_k=7),
    dict(temperature=1.4, top_p=0.7),
    dict(temperature=0.9, top_k=20, top_p=0.5),
]


@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_sampler_distribution_matches_transformers_warpers(case):
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    vocab, draws = 41, 20000
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(7)) * 2
    sampling = SamplingConfig(**case)
    ref = TemperatureLogitsWarper(sampling.temperature)(None, logits.clone())
    if sampling.top_k:
        ref = TopKLogitsWarper(sampling.top_k)(None, ref)
    if sampling.top_p < 1:
        ref = TopPLogitsWarper(sampling.top_p)(None, ref)
    ref_probs = torch.softmax(ref.double(), -1)
    # Inverse CDF on an even grid of u: each token's share of the grid is its probability +- 1/draws.
    u = (torch.arange(draws, dtype=torch.float32) + 0.5) / draws
    for row in range(3):
        tokens, logps = sample_tokens(logits[row:row + 1].expand(draws, -1), sampling, u)
        freq = torch.bincount(tokens, minlength=vocab).double() / draws
        torch.testing.assert_close(freq, ref_probs[row], atol=2.0 / draws, rtol=0)
        full = torch.log_softmax(logits[row].double() / sampling.temperature, -1)
        torch.testing.assert_close(logps.double(), full[tokens], atol=1e-5, rtol=1e-5)


def test_greedy_logprob_is_temperature_one():
    logits = torch.randn(4, 33, generator=torch.Generator().manual_seed(2))
    tokens, logps = sample_tokens(logits, SamplingConfig(greedy=True, temperature=0.3))
    assert tokens.tolist() == logits.argmax(-1).tolist()
    torch.testing.assert_close(logps, torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0])


def test_draws_are_one_uniform_per_row():
    a = draw_uniforms(5, torch.Generator().manual_seed(1), torch.device("cpu"))
    b = torch.rand(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- stopping


def test_stops_at_answer_and_eos(vl, prompt):
    script = vl.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    stop_ids = vl.tokenizer("</answer>", add_special_tokens=False)["input_ids"]
    assert len(stop_ids) > 1, "the test needs </answer> split over several tokens"
    eos = vl.eos_token_ids[0]
    new = len(script) + 6
    num = 3
    calls = []

    def force(module, inputs, output):
        # Decode call c (batch num) gives the logits of step c + 1: row 0 writes ANSWER from step 1,
        # row 1 emits EOS at step 2, row 2 is left alone.
        if output.shape[0] != num:
            return output
        c = len(calls)
        calls.append(c)
        output = output.clone()
        if c < len(script):
            output[0, -1, script[c]] += 1e4
        if c == 1:
            output[1, -1, eos] += 1e4
        return output

    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=new, greedy=True))
    free = engine.generate(prompt, 1)
    assert int(free.lengths[0]) == new, "unforced greedy decoding must not stop by itself here"
    handle = vl.lm_head.register_forward_hook(force)
    try:
        out = engine.generate(prompt, num)
    finally:
        handle.remove()
    assert out.lengths.tolist() == [1 + len(script), 3, new]
    assert out.completion_ids.shape == (num, new)
    assert out.completion_ids[0, 1:1 + len(script)].tolist() == script
    assert out.texts[0].endswith("</answer>") and ANSWER in out.texts[0]
    assert int(out.completion_ids[1, 2]) == eos
    assert out.completion_ids[2].tolist() == free.completion_ids[0].tolist()
    for g, n in enumerate(out.lengths.tolist()):
        assert (out.completion_mask[g, :n] == 1).all() and (out.completion_mask[g, n:] == 0).all()
        assert (out.completion_ids[g, n:] == vl.pad_token_id).all()
        assert (out.logprobs[g, n:] == 0).all()
    assert out.timing["tokens"] == sum(out.lengths.tolist())


def test_stop_string_over_several_tokens(vl, prompt):
    free = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, greedy=True, stop_strings=())).generate(prompt, 1)
    ids = free.completion_ids[0].tolist()
    # A stop string made of the end of token 4's text and the start of token 5's (or all of them).
    text4 = vl.tokenizer.decode(ids[:5])
    text5 = vl.tokenizer.decode(ids[:6])
    stop = text4[-2:] + text5[len(text4):len(text4) + 1]
    first = next(k for k in range(1, 13) if stop in vl.tokenizer.decode(ids[:k]))
    out = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, greedy=True, stop_strings=(stop,))).generate(prompt, 2)
    assert out.lengths.tolist() == [first, first]
    assert out.completion_ids[0].tolist() == ids[:first]


def test_max_new_tokens_one(vl, prompt):
    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=1))
    out = engine.generate(prompt, 8, generator=torch.Generator().manual_seed(0))
    assert out.completion_ids.shape == (8, 1) and out.lengths.tolist() == [1] * 8
    assert out.timing["steps"] == 1
    ref = _teacher_forced_logprobs(vl, prompt, out.completion_ids[3], 1.0)
    torch.testing.assert_close(out.logprobs[3].double(), ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- engine


def test_prefill_runs_vision_once(vl, prompt):
    calls = []
    handle = vl.model.model.visual.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        RolloutEngine(vl, SamplingConfig(max_new_tokens=4)).generate(prompt, 8, generator=torch.Generator())
    finally:
        handle.remove()
    assert len(calls) == 1


def test_generate_many_reuses_cache_across_prompt_lengths(vl):
    prompts = [_prompt(vl, "a long query about the small blue square that slowly turns into a red one", seed=1),
               _prompt(vl, "the circle", seed=2)]
    assert prompts[0].input_ids.shape[1] != prompts[1].input_ids.shape[1]
    sampling = SamplingConfig(max_new_tokens=8, greedy=True)
    shared = RolloutEngine(vl, sampling, cache_block=512)
    many = shared.generate_many(prompts, 2)
    for p, out in zip(prompts, many):
        fresh = RolloutEngine(vl, sampling).generate(p, 2)
        assert torch.equal(out.completion_ids, fresh.completion_ids)
        torch.testing.assert_close(out.logprobs, fresh.logprobs)
        assert set(out.timing) >= {"prefill_s", "decode_s", "tokens"}


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(temperature=float("nan")), dict(top_p=0),
                                    dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=0),
                                    dict(stop_strings="</answer>"), dict(stop_strings=("",))])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError, match="SamplingConfig"):
        SamplingConfig(**kwargs)


def test_bad_num_samples_raises(vl, prompt):
    with pytest.raises(ValueError, match="num_samples"):
        RolloutEngine(vl, SamplingConfig(max_new_tokens=2)).generate(prompt, 0)


# ---------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_bf16_greedy_and_logprobs():
    from tempo_fast.model import forward_kwargs, load_model

    vl = load_model(tiny_name(), device="cuda", dtype=torch.bfloat16)
    prompt = _prompt(vl, device="cuda")
    out = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, greedy=True)).generate(prompt, 4)
    with torch.no_grad():
        ref = vl.model.generate(**forward_kwargs(prompt), do_sample=False, max_new_tokens=12,
                                eos_token_id=vl.eos_token_ids, pad_token_id=vl.pad_token_id)
    n = int(out.lengths[0])
    assert out.completion_ids[0, :n].tolist() == ref[0, prompt.input_ids.shape[1]:][:n].tolist()
    sampled = RolloutEngine(vl, SamplingConfig(max_new_tokens=12, temperature=0.8)).generate(
        prompt, 4, generator=torch.Generator(device="cuda").manual_seed(0))
    for g in range(4):
        n = int(sampled.lengths[g])
        ref_lp = _teacher_forced_logprobs(vl, prompt, sampled.completion_ids[g, :n], 0.8)
        torch.testing.assert_close(sampled.logprobs[g, :n].double(), ref_lp, atol=5e-2, rtol=5e-2)


@pytest.mark.gpu
def test_gpu_compiled_decode_equals_eager():
    from tempo_fast.model import load_model

    vl = load_model(tiny_name(), device="cuda", dtype=torch.float32)
    prompt = _prompt(vl, device="cuda")
    sampling = SamplingConfig(max_new_tokens=16, greedy=True)
    eager = RolloutEngine(vl, sampling).generate(prompt, 8)
    compiled_engine = RolloutEngine(vl, sampling, compile=True)
    for _ in range(2):  # the second call replays the captured graphs
        compiled = compiled_engine.generate(prompt, 8)
        assert torch.equal(compiled.completion_ids, eager.completion_ids)
        torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-4, rtol=1e-4)

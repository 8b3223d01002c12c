"""tempo_fast.model: the tiny preset (build, save, load), its tokenizer and chat template, load
errors, and grounding prompts (shapes, time-true position ids, agreement with transformers)."""
import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.data.synthetic import ACTIONS, COLOURS, SHAPES, query_text  # noqa: E402
from tempo_fast.model import PromptInputs, VLModel, build_prompt, build_tiny, forward_kwargs, load_model  # noqa: E402
from tempo_fast.model.tiny import RANDOM_NAME, SPECIAL_TOKENS, build_tokenizer, init_weights, tiny_config  # noqa: E402
from tempo_fast.rewards import format_answer  # noqa: E402

QUERY = "the red circle moves"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def vl(tiny_dir):
    return load_model(tiny_dir)


def _frames(pts, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (len(pts), 3, size, size), dtype=torch.uint8, generator=g)
    return data, torch.tensor(pts, dtype=torch.float64)


def _logits(vl, **kwargs):
    vl.model.model.rope_deltas = None  # no state carried between calls
    with torch.no_grad():
        return vl.model(**kwargs).logits


# ---------------------------------------------------------------- build, save, load


def test_round_trip_same_logits(vl):
    from transformers import Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(0)
    fresh = Qwen2_5_VLForConditionalGeneration(tiny_config(build_tokenizer())).float().eval()
    init_weights(fresh)
    prompt = build_prompt(vl, _frames([0.0, 0.5, 1.0, 1.5]), QUERY)
    torch.testing.assert_close(_logits(vl, **forward_kwargs(prompt)),
                               fresh(**forward_kwargs(prompt)).logits.detach(), rtol=0, atol=0)


def test_build_is_deterministic_and_small(tiny_dir, tmp_path):
    from safetensors.torch import load_file
    again = build_tiny(tmp_path / "again", seed=0)
    other = build_tiny(tmp_path / "other", seed=1)
    a, b, c = (load_file(str(p / "model.safetensors")) for p in (tiny_dir, again, other))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (tiny_dir / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    size = sum(f.stat().st_size for f in tiny_dir.iterdir())
    assert size < 8 << 20, size


def test_load_tiny_random_by_name_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPO_FAST_HOME", str(tmp_path))
    first = load_model("tiny-random")
    folder = tmp_path / RANDOM_NAME
    assert first.path == folder and (folder / "config.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    second = load_model("tiny-random")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [RANDOM_NAME]  # no temp folder left behind
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters()))


def test_init_scale_is_fixed(vl):
    """Every matrix starts at std INIT_STD (0.1), not transformers' 0.02 (too small at width 64 / 32)."""
    for name, p in vl.model.named_parameters():
        if p.ndim >= 2:
            assert abs(float(p.detach().std()) - 0.1) < 0.02, (name, float(p.detach().std()))


def test_load_tiny_by_name_is_the_shipped_pretrained_model(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tempo_fast.model.tiny import WEIGHTS_FILE, shipped_manifest
    monkeypatch.setenv("TEMPO_FAST_HOME", str(tmp_path))
    vl = load_model("tiny")
    assert vl.path.name == f"tiny-qwen2_5_vl-{shipped_manifest()['sha256'][:12]}"
    shipped = load_file(str(WEIGHTS_FILE))
    assert load_file(str(vl.path / "model.safetensors")).keys() == shipped.keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(str(vl.path / "model.safetensors")).values(),
                                                  shipped.values()))
    assert len(list(tmp_path.iterdir())) == 1  # no temp folder left behind


def test_vlmodel_properties(vl):
    tok = vl.tokenizer
    assert vl.family == "qwen2_5_vl" and isinstance(vl, VLModel)
    assert vl.device == torch.device("cpu") and vl.dtype == torch.float32
    assert vl.eos_token_ids == [tok.convert_tokens_to_ids("<|im_end|>")]
    assert vl.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert vl.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert vl.lm_head is vl.model.lm_head
    assert vl.model.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------- tokenizer and template


def _texts():
    queries = [query_text(dict(size=size, colour=c, shape=s, action=a, target="white" if a == "change" else None))
               for size in (None, "large") for c in COLOURS for s in SHAPES for a in ACTIONS]
    answers = [format_answer([(0.0, 3.5)]), format_answer(None), format_answer(None, think="not shown"),
               format_answer([(12.25, 18.5), (20.0, 31.75)], think="it moves twice", decimals=2),
               "<answer>7 to 9</answer>", "<think>The Red circle, at 4.0s?!</think><answer>1.0 to 2.0</answer>"]
    stamps = [f"<{t:.1f} seconds>" for t in (0.0, 0.25, 9.95, 123.4, 3599.9)]
    return queries + answers + stamps + ["  two  spaces\nnew line\ttab", "ümlaut ok 中文", ""]


@pytest.mark.parametrize("text", _texts())
def test_tokenizer_round_trip(vl, text):
    ids = vl.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert vl.tokenizer.decode(ids) == text
    assert all(0 <= i < vl.model.config.text_config.vocab_size for i in ids)


def test_digits_are_single_tokens(vl):
    tok = vl.tokenizer
    ids = tok("12.5 to 18.0", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[:4] == ["1", "2", ".", "5"] and pieces[-4:] == ["1", "8", ".", "0"]


def test_special_tokens_match_config(vl):
    tok, cfg = vl.tokenizer, vl.model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    for t, i in ids.items():
        assert tok(t, add_special_tokens=False)["input_ids"] == [i], t
        assert tok(f"a{t}b", add_special_tokens=False)["input_ids"].count(i) == 1, t
    assert cfg.video_token_id == ids["<|video_pad|>"]
    assert cfg.image_token_id == ids["<|image_pad|>"]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert cfg.text_config.eos_token_id == tok.eos_token_id == ids["<|im_end|>"]
    assert cfg.text_config.pad_token_id == tok.pad_token_id == ids["<|endoftext|>"]
    assert cfg.text_config.vocab_size == len(tok)
    assert ids["<|video_pad|>"] != 151656  # the tiny vocabulary is not Qwen's


def test_chat_template_renders(vl):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUERY}]}]
    text = vl.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    f"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{QUERY}<|im_end|>\n"
                    "<|im_start|>assistant\n")
    plain = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "<answer>none</answer>"}]
    assert vl.tokenizer.apply_chat_template(plain, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n<answer>none</answer><|im_end|>\n")


# ---------------------------------------------------------------- load errors


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_model(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_load_no_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_load_text_only_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    with pytest.raises(ValueError, match="model_type 'qwen2', which is not a video-LLM; expected one of "
                                         "qwen2_5_vl, qwen3_vl"):
        load_model(tmp_path)


def test_load_missing_tokenizer(tiny_dir, tmp_path):
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_dir / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no tokenizer files") as err:
        load_model(tmp_path)
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- prompts


def test_build_prompt_shapes(vl):
    prompt = build_prompt(vl, _frames([0.0, 0.5, 1.0, 1.5, 2.0, 2.5]), QUERY)
    assert isinstance(prompt, PromptInputs)
    L = prompt.input_ids.shape[1]
    assert prompt.input_ids.dtype == torch.long and prompt.attention_mask.shape == (1, L)
    assert prompt.position_ids.shape == (3, 1, L) and prompt.position_ids.dtype == torch.long
    t, h, w = prompt.video_grid_thw[0].tolist()
    assert (t, h, w) == (3, 4, 4)  # 64x64 frames -> 56x56 (the tiny pixel bounds), 6 frames -> 3 patches
    assert prompt.pixel_values_videos.shape == (t * h * w, 3 * 2 * 14 * 14)
    assert int((prompt.input_ids == vl.video_token_id).sum()) == t * h * w // 4
    assert prompt.next_position == int(prompt.position_ids.max()) + 1
    torch.testing.assert_close(prompt.second_per_grid_ts, torch.tensor([1.0]))
    assert prompt.pts.dtype == torch.float64 and prompt.duration == pytest.approx(2.5)
    text = vl.tokenizer.decode(prompt.input_ids[0])
    for stamp in ("<0.2 seconds>", "<1.2 seconds>", "<2.2 seconds>"):
        assert text.count(stamp + "<|vision_start|>") == 1
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert text.endswith(f"<answer>none</answer>.\nQuery: {QUERY}<|im_end|>\n<|im_start|>assistant\n")
    # text tokens: the same id on all three axes, +1 per token inside each text run
    pos, is_text = prompt.position_ids[:, 0], prompt.input_ids[0] != vl.video_token_id
    assert torch.equal(pos[0, is_text], pos[1, is_text]) and torch.equal(pos[0, is_text], pos[2, is_text])
    idx = torch.nonzero(is_text).flatten()
    runs = idx[1:] == idx[:-1] + 1
    assert torch.all(pos[0, idx[1:]][runs] == pos[0, idx[:-1]][runs] + 1)
    assert torch.all(pos[0, idx[1:]] > pos[0, idx[:-1]])


def test_position_ids_follow_true_time(vl):
    """Two temporal patches 20 s apart: temporal ids 20 s x 2 tokens/s = 40 apart (tiny config)."""
    prompt = build_prompt(vl, _frames([0.0, 0.5, 20.0, 20.5]), QUERY)
    video = prompt.input_ids[0] == vl.video_token_id
    t_ids = prompt.position_ids[0, 0, video].view(2, -1)
    assert torch.all(t_ids[0] == t_ids[0, 0]) and torch.all(t_ids[1] == t_ids[1, 0])
    assert int(t_ids[1, 0] - t_ids[0, 0]) == 40
    assert "<20.2 seconds>" in prompt.text


def test_forward_runs(vl):
    prompt = build_prompt(vl, _frames([0.0, 0.4, 0.8, 1.9]), "the small blue diamond turns red")
    logits = _logits(vl, **forward_kwargs(prompt))
    assert logits.shape == (1, prompt.input_ids.shape[1], vl.model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_plain_layout_matches_transformers_positions(vl):
    """Uniform 2 fps, no timestamp text: our ids equal transformers' own, and so do the logits."""
    prompt = build_prompt(vl, _frames([0.5 * k for k in range(8)]), QUERY, timestamps=False,
                          after_vision="spatial")
    assert "seconds>" not in prompt.text
    token_type = (prompt.input_ids == vl.video_token_id).int() * 2
    ref, _ = vl.model.model.get_rope_index(prompt.input_ids, token_type, video_grid_thw=prompt.video_grid_thw,
                                           second_per_grid_ts=prompt.second_per_grid_ts)
    assert torch.equal(prompt.position_ids, ref)
    ours = _logits(vl, **forward_kwargs(prompt))
    kwargs = {k: v for k, v in forward_kwargs(prompt).items() if k != "position_ids"}
    theirs = _logits(vl, **kwargs, mm_token_type_ids=token_type)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # the check can fail: the other after-video rule moves the text after the video
    other = build_prompt(vl, _frames([0.5 * k for k in range(8)]), QUERY, timestamps=False, after_vision="max")
    assert not torch.equal(other.position_ids, ref)
    assert not torch.allclose(_logits(vl, **forward_kwargs(other)), ours)


def test_build_prompt_errors(vl):
    with pytest.raises(TypeError, match="frames must be"):
        build_prompt(vl, torch.zeros(2, 3, 64, 64, dtype=torch.uint8), QUERY)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        build_prompt(vl, _frames([0.0, 0.5]), "  ")


# ---------------------------------------------------------------- Qwen3-VL


@pytest.fixture(scope="module")
def vl3(tmp_path_factory):
    """A tiny random Qwen3-VL with the tiny tokenizer, saved and loaded like a checkpoint."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, out_hidden_size=64,
                  num_position_embeddings=16, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen3")
    Qwen3VLForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": {"shortest_edge": 64 * 64, "longest_edge": 128 * 128}}))
    return load_model(folder)


def test_qwen3_eta_positions_match_transformers(vl3):
    assert vl3.family == "qwen3_vl" and vl3.image_mean == (0.5, 0.5, 0.5) and vl3.min_pixels == 64 * 64
    prompt = build_prompt(vl3, _frames([0.0, 0.5, 3.0, 3.5, 9.0, 9.5]), QUERY)
    assert prompt.second_per_grid_ts is None and "second_per_grid_ts" not in forward_kwargs(prompt)
    assert prompt.pixel_values_videos.shape[1] == 3 * 2 * 16 * 16
    assert prompt.video_grid_thw[0].tolist() == [3, 4, 4]
    token_type = (prompt.input_ids == vl3.video_token_id).int() * 2
    ref, _ = vl3.model.model.get_rope_index(prompt.input_ids, token_type, video_grid_thw=prompt.video_grid_thw)
    assert torch.equal(prompt.position_ids, ref)
    vl3.model.model.rope_deltas = None
    with torch.no_grad():
        ours = vl3.model(**forward_kwargs(prompt)).logits
        kwargs = {k: v for k, v in forward_kwargs(prompt).items() if k != "position_ids"}
        vl3.model.model.rope_deltas = None
        theirs = vl3.model(**kwargs, mm_token_type_ids=token_type).logits
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_load_and_forward(tiny_dir):
    vl = load_model(tiny_dir, device="cuda")
    assert vl.device.type == "cuda" and vl.dtype == torch.bfloat16
    prompt = build_prompt(vl, _frames([0.0, 0.5, 1.0, 1.5]), QUERY)
    assert prompt.input_ids.is_cuda and prompt.pixel_values_videos.dtype == torch.bfloat16
    reference = build_prompt(load_model(tiny_dir), _frames([0.0, 0.5, 1.0, 1.5]), QUERY)
    assert torch.equal(prompt.position_ids.cpu(), reference.position_ids)
    with torch.no_grad():
        logits = vl.model(**forward_kwargs(prompt)).logits
    assert torch.isfinite(logits.float()).all()

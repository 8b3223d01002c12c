"""The real-shape path on CPU: Qwen2.5-VL-7B- and Qwen3-VL-8B-configured checkpoints cut to 2 text
layers and 2 vision blocks (`tempo_fast.model.shapes`), bf16 as released, loaded through
`load_model(path)` like a download, then prompts (pixel and rotary-id shapes from the config's
patch sizes, plain-layout ids against transformers' own), `ground`, `predict` and one GRPO step;
and the loader's errors on missing or corrupt folders.

The folders (3.3 / 3.6 GB) are built once per machine into ~/.cache/tempo_fast/shapes (about
2 minutes each on 2 cores, the first time only); each model is loaded once per module.
"""
import dataclasses
import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.model import build_prompt, forward_kwargs, load_model  # noqa: E402
from tempo_fast.model.shapes import KINDS, RELEASED, ensure_shaped_checkpoint  # noqa: E402

FAMILY = {"qwen2.5-vl-7b": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}
# (hidden, vocabulary, heads, kv heads, vision hidden, patch, out_hidden) as released
SIZES = {"qwen2.5-vl-7b": (3584, 152064, 28, 4, 1280, 14, 3584), "qwen3-vl": (4096, 151936, 32, 8, 1152, 16, 4096)}
FRAME = {"qwen2.5-vl-7b": (84, 140), "qwen3-vl": (96, 160)}  # 3 x 5 merged tokens per temporal patch
SMALL = dict(num_frames=4, num_samples=2, max_new_tokens=3, workers=0)


@pytest.fixture(scope="session")
def folders():
    return {kind: ensure_shaped_checkpoint(kind) for kind in KINDS}


@pytest.fixture(scope="module", params=KINDS)
def shaped(request, folders):
    kind = request.param
    vl = load_model(folders[kind], dtype=torch.bfloat16)
    yield kind, vl
    del vl


def _pixels(kind):
    h, w = FRAME[kind]
    return dict(min_pixels=h * w, max_pixels=h * w)


def _frames(kind, pts=(0.0, 0.5, 3.0, 3.5), seed=0):
    h, w = FRAME[kind]
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (len(pts), 3, h, w), dtype=torch.uint8, generator=gen)
    return frames, torch.tensor(pts, dtype=torch.float64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tempo_fast.video.clips import make_clip

    folder = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(("va", "vb")):
        make_clip(folder / f"{name}.mp4", width=64, height=64, fps=8, seconds=3 + i)
    return folder


# ---------------------------------------------------------------- the recipe (no model needed)


def test_cut_keeps_the_released_stacks_at_full_depth():
    from tempo_fast.model.shapes import _cut_config

    full = _cut_config("qwen2.5-vl-7b", 28, 32)
    assert full == RELEASED["qwen2.5-vl-7b"]  # the cut rule at the released depth is the release
    assert _cut_config("qwen2.5-vl-7b", 2, 2)["vision_config"]["fullatt_block_indexes"] == [1]
    assert _cut_config("qwen2.5-vl-7b", 2, 12)["vision_config"]["fullatt_block_indexes"] == [7]
    assert _cut_config("qwen3-vl", 36, 27) == RELEASED["qwen3-vl"]
    assert _cut_config("qwen3-vl", 2, 2)["vision_config"]["deepstack_visual_indexes"] == [0, 1]
    assert _cut_config("qwen3-vl", 1, 2)["vision_config"]["deepstack_visual_indexes"] == [0]  # one per text layer
    with pytest.raises(ValueError, match="vision_blocks must be an int >= 1"):
        _cut_config("qwen3-vl", 2, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ensure_shaped_checkpoint("qwen2-vl")


def test_tokenizer_has_qwens_ids():
    from tempo_fast.model.shapes import QWEN3_ADDED, QWEN_ADDED, build_shaped_tokenizer

    tok = build_shaped_tokenizer("qwen3-vl")
    for offset, (content, special) in enumerate(QWEN_ADDED + QWEN3_ADDED):
        assert tok.convert_tokens_to_ids(content) == 151643 + offset
    assert len(tok) == 151669 and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "<think>x</think><answer>3.5 to 12.0; 20.0 to 21.5</answer>"
    ids = tok(text).input_ids
    assert ids[0] == 151667 and max(ids) < 151669 and tok.decode(ids) == text
    assert len(build_shaped_tokenizer("qwen2.5-vl-7b")) == 151665


def test_new_tokenizer_links_the_cached_weights(tmp_path, monkeypatch):
    from tempo_fast.model import shapes

    monkeypatch.setenv("TEMPO_FAST_HOME", str(tmp_path))
    weights = shapes._weights_digest("qwen3-vl", 2, 2, None, 0)
    donor = shapes.shapes_home() / "qwen3-vl-0123456789ab"  # built with an older tokenizer
    donor.mkdir(parents=True)
    for name in ("config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"):
        (donor / name).write_text(name)
    (donor / shapes.MARKER).write_text(json.dumps({"weights": weights}))
    path = ensure_shaped_checkpoint("qwen3-vl")
    assert path != donor and path == shapes.shaped_path("qwen3-vl")
    shard = path / "model-00001-of-00001.safetensors"
    assert os.path.samefile(shard, donor / shard.name)  # a hard link, no new initialisation
    assert json.loads((path / "config.json").read_text())["text_config"]["hidden_size"] == 4096
    assert (path / "tokenizer.json").is_file() and (path / "video_preprocessor_config.json").is_file()
    assert json.loads((path / shapes.MARKER).read_text()) == {"weights": weights}


# ---------------------------------------------------------------- the folder and the loaded model


def test_folder_has_the_released_layout_and_sizes(shaped, folders):
    kind, vl = shaped
    folder = folders[kind]
    config = json.loads((folder / "config.json").read_text())
    hidden, vocab, heads, kv, v_hidden, patch, out_hidden = SIZES[kind]
    text = config if kind == "qwen2.5-vl-7b" else config["text_config"]  # the released layouts
    assert (text["hidden_size"], text["vocab_size"], text["num_attention_heads"]) == (hidden, vocab, heads)
    assert (text["num_hidden_layers"], config["vision_config"]["depth"]) == (2, 2)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    prefixes = {"qwen2.5-vl-7b": ("visual.", "model.layers."),  # the released key names of each
                "qwen3-vl": ("model.visual.", "model.language_model.layers.")}[kind]
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in index["weight_map"]), prefix
    assert "lm_head.weight" in index["weight_map"]

    assert vl.family == FAMILY[kind] and vl.dtype == torch.bfloat16
    tc = vl.config.get_text_config()
    assert (tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads, tc.num_hidden_layers) == (hidden, heads, kv, 2)
    embed, head = vl.model.get_input_embeddings().weight, vl.lm_head.weight
    assert embed.shape == head.shape == (vocab, hidden) and embed.data_ptr() != head.data_ptr()  # untied
    assert (vl.vision.hidden_size, vl.vision.patch_size, vl.vision.out_hidden_size) == (v_hidden, patch, out_hidden)
    visual = vl.model.model.visual
    assert len(visual.blocks) == 2
    if kind == "qwen2.5-vl-7b":
        assert list(vl.vision.fullatt_block_indexes) == [1] and vl.vision.window_size == 112  # one windowed, one full
        assert tc.rope_parameters["mrope_section"] == [16, 24, 24] and tc.rope_parameters["rope_theta"] == 1e6
        assert vl.tokens_per_second == 2.0
    else:
        assert list(vl.vision.deepstack_visual_indexes) == [0, 1] and len(visual.deepstack_merger_list) == 2
        assert tc.rope_parameters["mrope_section"] == [24, 20, 20] and tc.rope_parameters["mrope_interleaved"]
    # the tokenizer's ids are the released ones, so the config's ids mean what they say
    tok = vl.tokenizer
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|vision_start|>", "<|video_pad|>"]) == [151645, 151652, 151656]
    assert vl.video_token_id == 151656 and vl.eos_token_ids[0] == 151645 and vl.pad_token_id == 151643
    assert len(tok) < vocab  # the head has rows past the tokenizer, as released
    assert tok.decode(tok("<answer>12.5 to 18.0</answer>").input_ids) == "<answer>12.5 to 18.0</answer>"


def test_prompt_shapes_follow_the_config(shaped):
    kind, vl = shaped
    h, w = FRAME[kind]
    patch, merge, tp = vl.vision.patch_size, vl.vision.spatial_merge_size, vl.vision.temporal_patch_size
    frames = _frames(kind)
    prompt = build_prompt(vl, frames, "the red circle moves", **_pixels(kind))
    grid = (4 // tp, h // patch, w // patch)
    assert prompt.video_grid_thw.tolist() == [list(grid)]
    assert prompt.pixel_values_videos.shape == (grid[0] * grid[1] * grid[2], 3 * tp * patch * patch)
    assert prompt.pixel_values_videos.dtype == torch.bfloat16
    n_video = int((prompt.input_ids == vl.video_token_id).sum())
    assert n_video == grid[0] * grid[1] * grid[2] // merge ** 2
    assert prompt.position_ids.shape == (3, 1, prompt.length)
    assert prompt.next_position == int(prompt.position_ids.max()) + 1

    # Qwen's own layout (Qwen2.5-VL: plain, uniform; Qwen3-VL: its native timestamps): our rotary
    # ids equal transformers' own at this config, and so does the forward pass
    uniform = _frames(kind, pts=(0.0, 0.5, 1.0, 1.5))  # 2 fps, what transformers' ids assume
    own = prompt if kind == "qwen3-vl" else build_prompt(vl, uniform, "the red circle moves", timestamps=False,
                                                         after_vision="spatial", **_pixels(kind))
    token_type = (own.input_ids == vl.video_token_id).int() * 2
    extra = {} if own.second_per_grid_ts is None else {"second_per_grid_ts": own.second_per_grid_ts}
    ref, _ = vl.model.model.get_rope_index(own.input_ids, token_type, video_grid_thw=own.video_grid_thw, **extra)
    assert torch.equal(own.position_ids, ref)
    with torch.no_grad():
        ours = vl.model(**forward_kwargs(own), logits_to_keep=1).logits
        vl.model.model.rope_deltas = None
        kwargs = {k: v for k, v in forward_kwargs(own).items() if k != "position_ids"}
        theirs = vl.model(**kwargs, mm_token_type_ids=token_type, logits_to_keep=1).logits
        vl.model.model.rope_deltas = None
    assert ours.shape == (1, 1, SIZES[kind][1]) and torch.isfinite(ours.float()).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    with torch.no_grad():  # the vision tower: merged tokens of the text model's width
        visual = vl.model.model.visual
        out = visual(prompt.pixel_values_videos, grid_thw=prompt.video_grid_thw)
        tokens = out.pooler_output if hasattr(out, "pooler_output") else (out[0] if isinstance(out, tuple) else out)
    assert tokens.shape == (n_video, SIZES[kind][0]) and torch.isfinite(tokens.float()).all()


# ---------------------------------------------------------------- ground and predict


def test_ground(shaped, clips):
    from tempo_fast import infer
    from tempo_fast.rewards import parse_answer

    kind, vl = shaped
    result = infer.ground(clips / "va.mp4", "the red circle moves", model=vl,
                          config=infer.InferConfig(**SMALL, **_pixels(kind)))
    assert set(result) >= {"windows", "refused", "refusal_score", "answer", "duration", "timing"}
    assert result["duration"] == pytest.approx(3.0, abs=0.2)
    assert isinstance(result["answer"], str) and isinstance(result["refused"], bool)
    parsed = parse_answer(result["answer"], result["duration"])  # random weights: whatever it wrote parses
    assert result["refused"] == parsed.refused
    if parsed.windows:  # the greedy answer's windows come first, as written
        got = [w[:2] for w in result["windows"][:len(parsed.windows)]]
        assert got == [pytest.approx(list(w), abs=1e-3) for w in parsed.windows]
    for start, end, score in result["windows"]:
        assert 0.0 <= start <= end <= result["duration"] and 0.0 <= score <= 1.0
    json.dumps(result)


def test_predict_file_layout(shaped, clips, tmp_path):
    from tempo_fast import infer
    from tempo_fast.metrics import evaluate_qvhighlights, read_jsonl

    kind, vl = shaped
    ann = tmp_path / "ann.jsonl"
    vids = ["va", "vb", "missing", "va"]
    ann.write_text("".join(json.dumps({"qid": q, "query": f"the red circle moves {q}", "duration": 3.0, "vid": v,
                                       "relevant_windows": [[0.5, 2.0]]}) + "\n" for q, v in enumerate(vids)))
    out = tmp_path / "preds.jsonl"
    fields = {f.name for f in dataclasses.fields(infer.InferConfig)}
    extra = {"batch_size": 2} if "batch_size" in fields else {}
    infer.predict(ann, clips, model=vl, out=out, config=infer.InferConfig(**SMALL, **_pixels(kind), **extra),
                  progress=False)
    records = read_jsonl(out)
    assert [r["qid"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert {"qid", "query", "vid", "pred_relevant_windows"} <= set(r)
        for window in r["pred_relevant_windows"]:
            assert len(window) == 3 and window[0] <= window[1]
    assert "error" in records[2] and records[2]["pred_relevant_windows"] == []
    assert all("error" not in r for i, r in enumerate(records) if i != 2)
    scores = evaluate_qvhighlights(records, read_jsonl(ann))
    assert set(scores) >= {"MR-full-R1@0.5", "MR-full-mAP"}


# ---------------------------------------------------------------- one GRPO step (last: it trains the model)


@pytest.mark.slow  # 36-40 s (idle) to 135-200 s (busy) on 2 cores, much of it in fused_grpo_loss's 256-row CPU blocks
def test_grpo_step_updates_the_model(shaped):
    from tempo_fast.data.loaders import GroundingRecord
    from tempo_fast.rollout import RolloutEngine, SamplingConfig
    from tempo_fast.train.config import GRPOConfig, OptimConfig
    from tempo_fast.train.grpo import grpo_step

    kind, vl = shaped
    record = GroundingRecord(id="q0", video_id="v0", video_path=None, duration=4.0, query="the red circle moves",
                             windows=((1.0, 3.0),), relevance="relevant")
    prompt = build_prompt(vl, _frames(kind), record.query, **_pixels(kind))
    samples = [SimpleNamespace(prompt=prompt, record=record, relevance="relevant", target="")]
    cfg = GRPOConfig(num_generations=2, max_new_tokens=3, optim=OptimConfig(lr=1.0, grad_clip=0.0, warmup_steps=0))
    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature))

    def reward(texts, sample):  # random weights never answer well: rewards that vary with the text
        return torch.tensor([float(sum(map(ord, t)) % 7) for t in texts]), {}

    watched = {"lm_head": vl.lm_head.weight, "last layer": vl.model.model.language_model.layers[-1].mlp.down_proj.weight}
    before = {k: p.detach().clone() for k, p in watched.items()}
    optimizer = torch.optim.SGD(vl.model.parameters(), lr=1.0)
    metrics, groups = grpo_step(vl, samples, cfg, engine=engine, optimizer=optimizer, reward_fn=reward,
                                generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    rewards = groups[0].rewards
    assert rewards.shape == (2,)
    if rewards[0] == rewards[1]:
        pytest.skip("both samples drew the same reward: zero advantages, nothing to learn")
    for name, p in watched.items():
        assert p.dtype == torch.bfloat16 and torch.isfinite(p.float()).all()
        assert not torch.equal(p, before[name]), f"{name} did not change"


# ---------------------------------------------------------------- the loader's errors


def _copy_small(src, dst, *, link_shards=True):
    """A copy of the folder's small files, the shards hard-linked (or symlinked)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            if link_shards:
                os.symlink(f, dst / f.name)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_load_errors_name_the_folder(folders, tmp_path):
    src = folders["qwen2.5-vl-7b"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "absent")
    no_config = _copy_small(src, tmp_path / "no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(no_config)
    bad_json = _copy_small(src, tmp_path / "bad_json")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(bad_json)
    no_tokenizer = _copy_small(src, tmp_path / "no_tokenizer")
    for name in ("tokenizer.json", "vocab.json", "tokenizer.model"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_model(no_tokenizer)
    other = _copy_small(src, tmp_path / "other")
    (other / "config.json").write_text(json.dumps({**RELEASED["qwen2.5-vl-7b"], "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        load_model(other)


def test_load_errors_on_missing_or_corrupt_weights(folders, tmp_path):
    src = folders["qwen2.5-vl-7b"]
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    missing = _copy_small(src, tmp_path / "missing_shard")
    (missing / shards[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing}.*{shards[-1]}"):
        load_model(missing)
    corrupt = _copy_small(src, tmp_path / "corrupt_shard")
    (corrupt / shards[0]).unlink()
    (corrupt / shards[0]).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match=f"{corrupt}.*{shards[0]}"):
        load_model(corrupt)
    no_weights = _copy_small(src, tmp_path / "no_weights", link_shards=False)
    (no_weights / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(no_weights)

"""Tests for tempo_fast.video.eta: the prompt layout against Qwen3-VL's processor code, position ids
against transformers' own get_rope_index (Qwen2.5-VL and Qwen3-VL, called on a stand-in object
that carries only the config) and against the original Qwen2.5-VL rule written out here."""
import types

import pytest
import torch

from tempo_fast.video.eta import (VIDEO_PAD, VIDEO_TOKEN_ID, eta_input_ids, eta_position_ids, eta_prompt,
                                  eta_video_text, rope_deltas, slot_times)

START, END = 151652, 151653
SHAPES = [  # (grid_t, h, w) of the video, text lengths before and after it
    ((5, 4, 6), 7, 9),
    ((1, 2, 2), 1, 1),
    ((8, 6, 2), 13, 3),
    ((3, 10, 4), 2, 0),
]


def _hf_rope(model: str):
    """transformers' get_rope_index bound to an object holding only what it reads."""
    if model == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel as cls
        config = Qwen2_5_VLConfig(vision_config={"tokens_per_second": 2, "spatial_merge_size": 2})
    else:
        from transformers import Qwen3VLConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel as cls
        config = Qwen3VLConfig()
    self = types.SimpleNamespace(config=config)
    self.get_vision_position_ids = lambda *a, **k: cls.get_vision_position_ids(self, *a, **k)

    def rope(input_ids, **kwargs):
        kind = (input_ids == VIDEO_TOKEN_ID).int() * 2
        return cls.get_rope_index(self, input_ids=input_ids, mm_token_type_ids=kind, **kwargs)
    return rope


def _text(n, seed):
    return torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed))


def _plain_ids(grid, before, after, seed=0):
    t, h, w = grid
    video = torch.full((t * h * w // 4,), VIDEO_TOKEN_ID)
    return torch.cat([_text(before, seed), torch.tensor([START]), video, torch.tensor([END]), _text(after, seed + 1)])


def _original_qwen25(ids, grid, interval):
    """Qwen2.5-VL's original rule (transformers <= 5.2): text after vision starts at max + 1."""
    t, h, w = grid
    first = int((ids == VIDEO_TOKEN_ID).nonzero()[0])
    n_video = t * (h // 2) * (w // 2)
    out = torch.empty(3, ids.numel(), dtype=torch.long)
    out[:, :first] = torch.arange(first)
    j, r, c = torch.meshgrid(torch.arange(t), torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    out[0, first:first + n_video] = first + (j.flatten() * interval).long()
    out[1, first:first + n_video] = first + r.flatten()
    out[2, first:first + n_video] = first + c.flatten()
    rest = ids.numel() - first - n_video
    out[:, first + n_video:] = out[:, first:first + n_video].max() + 1 + torch.arange(rest)
    return out


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
@pytest.mark.parametrize("grid,before,after", SHAPES)
def test_uniform_matches_transformers(grid, before, after, fps):
    ids = _plain_ids(grid, before, after)[None]
    pts = torch.arange(2 * grid[0], dtype=torch.float64) / fps
    ref, deltas = _hf_rope("qwen2_5_vl")(ids, video_grid_thw=torch.tensor([grid]),
                                         second_per_grid_ts=torch.tensor([2 / fps]))
    assert torch.equal(eta_position_ids(ids, [grid], [pts], after_vision="spatial"), ref)
    assert torch.equal(eta_position_ids(ids, [grid], second_per_grid_ts=[2 / fps], after_vision="spatial"), ref)
    original = _original_qwen25(ids[0], grid, 2 * 2 / fps)
    mine = eta_position_ids(ids, [grid], pts)
    assert torch.equal(mine[:, 0], original)
    assert torch.equal(rope_deltas(mine), (original.max() + 1 - ids.shape[1]).view(1, 1))


def test_batch_with_left_padding_matches_transformers():
    grids = torch.tensor([[4, 4, 6], [3, 6, 4]])
    a, b = _plain_ids(grids[0].tolist(), 5, 3), _plain_ids(grids[1].tolist(), 2, 8, seed=7)
    length = max(a.numel(), b.numel()) + 2
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for row, seq in enumerate((a, b)):
        ids[row, length - seq.numel():] = seq
        mask[row, length - seq.numel():] = 1
    spg = torch.tensor([1.0, 0.5])
    ref, deltas = _hf_rope("qwen2_5_vl")(ids, video_grid_thw=grids, second_per_grid_ts=spg, attention_mask=mask)
    pts = [torch.arange(8) * 0.5, torch.arange(6) * 0.25]
    mine = eta_position_ids(ids, grids, pts, attention_mask=mask, after_vision="spatial")
    assert torch.equal(mine, ref)
    assert torch.equal(rope_deltas(mine, mask), deltas)


def test_qwen3_interleaved_layout_matches_transformers():
    grids = torch.tensor([[3, 4, 6], [2, 2, 4]])
    parts = [_text(6, 0)]
    for v, (t, h, w) in enumerate(grids.tolist()):
        for j in range(t):
            parts += [_text(5 + j, 10 * v + j), torch.tensor([START]), torch.full((h * w // 4,), VIDEO_TOKEN_ID),
                      torch.tensor([END])]
        parts.append(_text(4, 99 + v))
    ids = torch.cat(parts)[None]
    ref, _ = _hf_rope("qwen3_vl")(ids, video_grid_thw=grids)
    assert torch.equal(eta_position_ids(ids, grids, tokens_per_second=0), ref)
    assert torch.equal(eta_position_ids(ids, grids, tokens_per_second=0, after_vision="spatial"), ref)


def test_non_uniform_times_set_temporal_ids():
    grid = (6, 4, 4)
    pts = torch.tensor([0.0, 0.1, 0.3, 0.4, 5.0, 5.1, 5.2, 5.3, 20.0, 20.5, 61.0, 61.25], dtype=torch.float64)
    ids = _plain_ids(grid, 3, 4)[None]
    pos = eta_position_ids(ids, [grid], [pts])[0, 0]
    first = int((ids[0] == VIDEO_TOKEN_ID).nonzero()[0])
    t_ids = pos[first::4][:6]  # 4 tokens per temporal patch
    tau = (pts[0::2] + pts[1::2]) / 2
    assert t_ids.tolist() == (first + torch.floor((tau - tau[0]) * 2 + 1e-6).long()).tolist()
    assert bool((t_ids.diff() >= 0).all())
    gaps, time_gaps = t_ids.diff().double(), tau.diff() * 2
    assert bool(((gaps - time_gaps).abs() <= 1).all())
    assert pos[-5:].tolist() == list(range(int(t_ids[-1]) + 1, int(t_ids[-1]) + 6))  # <|vision_end|> + text


def test_interleaved_eta_text():
    grid = (4, 4, 4)
    pts = torch.tensor([0.0, 0.5, 1.0, 1.5, 30.0, 30.5, 31.0, 31.5], dtype=torch.float64)
    tau = slot_times(pts)
    parts, stamps = [_text(3, 0)], []
    for j in range(grid[0]):
        stamps.append(sum(p.numel() for p in parts))
        parts += [_text(6, j), torch.tensor([START]), torch.full((4,), VIDEO_TOKEN_ID), torch.tensor([END])]
    ids = torch.cat(parts)[None]
    pos = eta_position_ids(ids, [grid], [pts])[:, 0]
    video = (ids[0] == VIDEO_TOKEN_ID).nonzero().flatten()
    text = (ids[0] != VIDEO_TOKEN_ID).nonzero().flatten()
    # text tokens: equal on all axes, +1 within each text run
    assert torch.equal(pos[0, text], pos[1, text]) and torch.equal(pos[0, text], pos[2, text])
    for j, s in enumerate(stamps):
        run = pos[0, s:s + 7] if j else pos[0, 1:10]
        assert run.diff().eq(1).all()
    t_ids = pos[0, video][::4]
    before = pos[0, video[::4] - 1]  # the <|vision_start|> right before each patch
    assert bool((t_ids > before).all())
    assert bool((t_ids.diff() >= (tau.diff() * 2).floor().long()).all())
    # the 29 s gap holds the interleaved text, so it is kept exactly: 58 positions
    assert int(t_ids[2] - t_ids[1]) == 58


def test_prompt_layout_matches_qwen3_processor():
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    fps, indices, grid = 30.0, [0, 7, 15, 38, 52, 90, 91], [4, 6, 4]
    proc = types.SimpleNamespace(video_processor=types.SimpleNamespace(merge_size=2, temporal_patch_size=2),
                                 video_token=VIDEO_PAD, vision_start_token="<|vision_start|>",
                                 vision_end_token="<|vision_end|>")
    proc._calculate_timestamps = lambda *a: Qwen3VLProcessor._calculate_timestamps(proc, *a)
    meta = VideoMetadata(total_num_frames=100, fps=fps, frames_indices=list(indices))
    ref = Qwen3VLProcessor.replace_video_token(proc, {"video_grid_thw": torch.tensor([grid]),
                                                      "video_metadata": [meta]}, 0)
    pts = torch.tensor(indices, dtype=torch.float64) / fps
    assert eta_video_text(pts, grid) == ref
    assert eta_video_text([0.0, 0.5, 2.0, 2.5], [2, 4, 6]) == (
        "<0.2 seconds><|vision_start|>" + VIDEO_PAD * 6 + "<|vision_end|>"
        "<2.2 seconds><|vision_start|>" + VIDEO_PAD * 6 + "<|vision_end|>")


def test_chat_prompt():
    text = eta_prompt([1.0, 2.0], [1, 2, 2], "Find it.")
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<1.5 seconds><|vision_start|><|video_pad|><|vision_end|>Find it.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    q3 = eta_prompt([1.0, 2.0], [1, 2, 2], "Find it.", model="qwen3_vl", add_generation_prompt=False)
    assert q3.startswith("<|im_start|>user\n") and q3.endswith("<|im_end|>\n")
    with pytest.raises(ValueError, match="model"):
        eta_prompt([1.0], [1, 2, 2], model="llava")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                           "<|vision_end|>", VIDEO_PAD]})
    return fast


def test_input_ids_expand_and_positions():
    tok = _tiny_tokenizer()
    pts, grid = [0.0, 0.4, 1.0, 1.4, 2.0], [3, 4, 6]
    full = eta_prompt(pts, grid, "where?")
    collapsed = eta_prompt(pts, grid, "where?", expand=False)
    ids = eta_input_ids(full, tok, grid)
    assert ids.tolist() == [tok(full, add_special_tokens=False)["input_ids"]]
    assert torch.equal(eta_input_ids(collapsed, tok, grid), ids)
    video_id = tok.convert_tokens_to_ids(VIDEO_PAD)
    assert int((ids == video_id).sum()) == 3 * 6
    pos = eta_position_ids(ids, [grid], [pts], video_token_id=video_id)
    assert pos.shape == (3, 1, ids.shape[1])
    with pytest.raises(ValueError, match="needs 36"):
        eta_input_ids(full, tok, [3, 4, 12])


def test_slot_times_and_errors():
    assert slot_times([0.0, 1.0, 2.0]).tolist() == [0.5, 2.0]
    assert slot_times([3.0], temporal_patch_size=2).tolist() == [3.0]
    with pytest.raises(ValueError, match="sorted"):
        slot_times([0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        slot_times([])
    grid = (2, 4, 4)
    ids = _plain_ids(grid, 2, 2)[None]
    with pytest.raises(ValueError, match="grid_t=2"):
        eta_position_ids(ids, [grid], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="needs 12"):
        eta_position_ids(ids, [(3, 4, 4)], [[0.0] * 6])
    with pytest.raises(ValueError, match="for 2 videos"):
        eta_position_ids(ids, [grid], [[0.0] * 4, [0.0] * 4])
    with pytest.raises(TypeError, match="integer"):
        eta_position_ids(ids.float(), [grid])
    with pytest.raises(ValueError, match="divisible"):
        eta_position_ids(ids, [(2, 3, 4)])
    split = torch.cat([_text(2, 0), torch.full((2,), VIDEO_TOKEN_ID), _text(1, 1), torch.full((6,), VIDEO_TOKEN_ID)])
    with pytest.raises(ValueError, match="inside temporal patch"):
        eta_position_ids(split[None], [grid])
    with pytest.raises(ValueError, match="after_vision"):
        eta_position_ids(ids, [grid], after_vision="min")

"""Small models and inputs shared by the rollout, inference and GRPO tests (not a test module)."""
import pytest
import torch


def tiny_name() -> str:
    """The random-init tiny preset ("tiny-random"; plain "tiny" where the package has no pretrained
    one): these tests compare engines with each other and with transformers, never the weights' answers."""
    from tempo_fast.model import tiny
    return "tiny-random" if hasattr(tiny, "RANDOM_NAME") else "tiny"


def random_frames(seed: int, num: int = 4, side: int = 56):
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (num, 3, side, side), dtype=torch.uint8, generator=gen)
    pts = torch.tensor([0.0, 0.4, 2.0, 2.6, 3.1, 3.3, 5.0, 5.5][:num], dtype=torch.float64)
    return data, pts


def tiny_qwen3_vl():
    """A random 2-layer Qwen3-VL (interleaved MRoPE, deepstack) with the tiny preset's tokenizer."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from tempo_fast.model import VLModel
    from tempo_fast.model.tiny import build_tokenizer

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|video_pad|>",
                                                        "<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                 "mrope_interleaved": True})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=64, deepstack_visual_indexes=[0], num_position_embeddings=64)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, video_token_id=ids["<|video_pad|>"],
                           image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).eval()
    torch.random.set_rng_state(state)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.generation_config.eos_token_id = [ids["<|im_end|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return VLModel(model=model, tokenizer=tok, family="qwen3_vl", path=".")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three small rendered clips va/vb/vc (56x56, 8 fps, 3-5 s) in a module-wide folder."""
    from tempo_fast.video.clips import make_clip

    folder = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(("va", "vb", "vc")):
        make_clip(folder / f"{name}.mp4", width=56, height=56, fps=8, seconds=3 + i)
    return folder


@pytest.fixture(scope="module")
def vl():
    """The tiny preset of `tiny_name()`, loaded once per module."""
    from tempo_fast.model import load_model

    return load_model(tiny_name())

"""Real-shaped checkpoints: the released Qwen2.5-VL-7B-Instruct and Qwen3-VL-8B-Instruct
configurations cut to a few layers, with random (seeded) bf16 weights, written as a downloaded
checkpoint folder so that `load_model(path)` and everything after it runs at the real sizes.

    path = ensure_shaped_checkpoint("qwen2.5-vl-7b")       # built once per machine, then cached
    vl = load_model(path, dtype=torch.bfloat16)

What is real and what is cut (`KINDS`):
- "qwen2.5-vl-7b": text hidden 3584, intermediate 18944, 28 heads / 4 kv heads (head_dim 128),
  vocabulary 152064 (untied head, as released), rope theta 1e6, mrope_section [16, 24, 24];
  vision hidden 1280, intermediate 3420, 16 heads, patch 14, temporal patch 2, merge 2,
  window 112, out_hidden 3584, tokens_per_second 2. Cut: `text_layers` decoder layers and
  `vision_blocks` vision blocks; the released tower is windowed with a full-attention block every
  8th (7/15/23/31), the cut keeps that period shortened to the depth: 2 blocks = one windowed,
  one full (`fullatt_block_indexes` [1]).
- "qwen3-vl" (Qwen3-VL-8B-Instruct): text hidden 4096, intermediate 12288, 32 heads / 8 kv heads,
  head_dim 128, vocabulary 151936 (untied), rope theta 5e6, interleaved mrope [24, 20, 20];
  vision hidden 1152, intermediate 4304, 16 heads, patch 16, merge 2, 2304 position embeddings,
  out_hidden 4096, deepstack taps at blocks 8/16/24 of 27. Cut: the taps scaled to the cut depth
  (2 blocks: taps after blocks 0 and 1, feeding text layers 0 and 1), at most one per text layer.

The folder holds what a download holds: `config.json` in the released layout (Qwen2.5-VL's text
fields at the top level and `rope_scaling`; Qwen3-VL's `text_config`), sharded
`model-0000k-of-0000n.safetensors` with `model.safetensors.index.json` (released key names:
`model.layers.*`, `visual.*`, `lm_head`), `generation_config.json`, `preprocessor_config.json`
(and Qwen3-VL's `video_preprocessor_config.json`) with the released values, and a tokenizer.
The tokenizer is the project's offline one (`tiny.build_tokenizer`): its learned byte-level BPE
tokens keep the low ids, unused filler tokens pad the regular vocabulary to 151643 entries, and
Qwen's added tokens follow at their released ids (`<|endoftext|>` 151643, `<|im_start|>` 151644,
`<|im_end|>` 151645, `<|vision_start|>` 151652 ... `<|video_pad|>` 151656, Qwen3's `<think>`
151667), so every config token id means what it means in the released checkpoint and the model
can emit ids past the tokenizer (152064 rows for 151665 tokens), as the real one can.

Sizes (bf16): qwen2.5-vl-7b 2 + 2 is 1.66 B parameters (3.3 GB), qwen3-vl 2 + 2 is 1.82 B
(3.6 GB); the embedding and head are 1.09 B / 1.24 B of that. Folders live in
`$TEMPO_FAST_HOME/shapes/<kind>-<hash>` (default `~/.cache/tempo_fast`), the hash covering the
spec, the cut, the seed, the dtype, the tokenizer and the processor configs, built in a temporary
folder renamed into place; never in git. A new tokenizer (the tiny corpus changed) reuses the
weight files of a cached folder with the same weights through hard links.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

from .tiny import build_atomic

FIRST_ADDED_ID = 151643
# Qwen2.5's added tokens in id order (151643...151664): (content, special)
QWEN_ADDED = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
# Qwen3 adds these after them (151665...151668)
QWEN3_ADDED = (("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False))
_BUILD_VERSION = 1  # bump when the folder layout changes
MARKER = "tempo_fast_shape.json"  # in each cached folder: the digest of its weights' recipe

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# The released config.json files (Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct), in
# their own layout; `_cut_config` shortens the stacks.
RELEASED = {
    "qwen2.5-vl-7b": {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
        "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
        "intermediate_size": 18944, "max_position_embeddings": 128000, "max_window_layers": 28,
        "model_type": "qwen2_5_vl", "num_attention_heads": 28, "num_hidden_layers": 28,
        "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.41.2",
        "use_cache": True, "use_sliding_window": False,
        "vision_config": {
            "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2, "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 152064,
    },
    "qwen3-vl": {
        "architectures": ["Qwen3VLForConditionalGeneration"], "image_token_id": 151655, "model_type": "qwen3_vl",
        "text_config": {
            "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643, "dtype": "bfloat16",
            "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
            "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 262144,
            "model_type": "qwen3_vl_text", "num_attention_heads": 32, "num_hidden_layers": 36,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
            "rope_theta": 5000000, "use_cache": True, "vocab_size": 151936,
        },
        "tie_word_embeddings": False, "transformers_version": "4.57.0.dev0", "video_token_id": 151656,
        "vision_config": {
            "deepstack_visual_indexes": [8, 16, 24], "depth": 27, "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": 1152, "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 4304,
            "model_type": "qwen3_vl", "num_heads": 16, "num_position_embeddings": 2304, "out_hidden_size": 4096,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        "vision_end_token_id": 151653, "vision_start_token_id": 151652,
    },
}
# generation_config.json, preprocessor_config.json and video_preprocessor_config.json as released
GENERATION = {
    "qwen2.5-vl-7b": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                      "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1,
                      "top_p": 0.001, "top_k": 1},
    "qwen3-vl": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                 "eos_token_id": [151645, 151643], "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.0,
                 "temperature": 0.7},
}
PREPROCESSOR = {
    "qwen2.5-vl-7b": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                      "merge_size": 2, "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD,
                      "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"},
    "qwen3-vl": {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                 "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                 "image_processor_type": "Qwen2VLImageProcessorFast"},
}
VIDEO_PREPROCESSOR = {
    "qwen3-vl": {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
                 "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                 "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                 "video_processor_type": "Qwen3VLVideoProcessor"},
}
KINDS = tuple(RELEASED)


def _check_kind(kind: str) -> None:
    if kind not in RELEASED:
        raise ValueError(f"shaped checkpoint kind must be one of {KINDS}, got {kind!r}")


def _cut_config(kind: str, text_layers: int, vision_blocks: int) -> dict:
    """The released config.json with `text_layers` decoder layers and `vision_blocks` vision blocks."""
    for name, value in (("text_layers", text_layers), ("vision_blocks", vision_blocks)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"build_shaped_checkpoint: {name} must be an int >= 1, got {value!r}")
    config = copy.deepcopy(RELEASED[kind])
    vision = config["vision_config"]
    full_depth = vision["depth"]
    vision["depth"] = vision_blocks
    if kind == "qwen2.5-vl-7b":
        config["num_hidden_layers"] = config["max_window_layers"] = text_layers
        period = min(8, vision_blocks)  # released: windowed blocks, a full one every 8th
        vision["fullatt_block_indexes"] = [i for i in range(vision_blocks) if i % period == period - 1]
    else:
        config["text_config"]["num_hidden_layers"] = text_layers
        taps = sorted({i * vision_blocks // full_depth for i in vision["deepstack_visual_indexes"]})
        vision["deepstack_visual_indexes"] = taps[:text_layers]
    return config


def build_shaped_tokenizer(kind: str):
    """The project's offline tokenizer laid out with the released vocabulary's ids (see the docstring)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    from tempo_fast.model.tiny import CHAT_TEMPLATE, build_tokenizer

    _check_kind(kind)
    tiny = json.loads(build_tokenizer().backend_tokenizer.to_str())
    specials = {t["content"] for t in tiny.get("added_tokens", [])}
    learned = [t for t, _ in sorted(tiny["model"]["vocab"].items(), key=lambda kv: kv[1]) if t not in specials]
    vocab = {t: i for i, t in enumerate(learned)}
    for i in range(len(vocab), FIRST_ADDED_ID):  # never produced by the merges, decoded as their text
        vocab[f"<|filler_{i}|>"] = i
    tiny["model"]["vocab"] = vocab
    tiny["added_tokens"] = []
    tiny["post_processor"] = None
    backend = Tokenizer.from_str(json.dumps(tiny))
    added = QWEN_ADDED + (QWEN3_ADDED if kind == "qwen3-vl" else ())
    for content, special in added:  # one at a time: each takes the next id
        token = AddedToken(content, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, clean_up_tokenization_spaces=False,
                                   model_max_length=131072 if kind == "qwen2.5-vl-7b" else 262144)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    for offset, (content, _) in enumerate(added):
        got = fast.convert_tokens_to_ids(content)
        if got != FIRST_ADDED_ID + offset:
            raise RuntimeError(f"build_shaped_tokenizer: {content!r} got id {got}, expected {FIRST_ADDED_ID + offset}")
    return fast


def shapes_home() -> Path:
    """`$TEMPO_FAST_HOME/shapes` (default `~/.cache/tempo_fast/shapes`)."""
    home = os.environ.get("TEMPO_FAST_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tempo_fast")
    return Path(home) / "shapes"


def _dtype_name(dtype) -> str:
    import torch

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"build_shaped_checkpoint: dtype must be a floating torch.dtype, got {dtype!r}")
    return str(dtype).removeprefix("torch.")


def _model_class(kind: str):
    import transformers

    return getattr(transformers, RELEASED[kind]["architectures"][0])


def _config_object(config: dict):
    """The transformers config object a loader builds from this config.json."""
    from transformers import AutoConfig

    data = dict(config)
    return AutoConfig.for_model(data.pop("model_type"), **data)


def build_shaped_checkpoint(kind: str, out_dir, *, text_layers: int = 2, vision_blocks: int = 2, dtype=None,
                            seed: int = 0, max_shard_size: str = "1GB") -> Path:
    """Write a `kind` checkpoint folder (random weights from `seed`, saved in `dtype`, default bf16)."""
    import torch
    from transformers import GenerationConfig

    _check_kind(kind)
    dtype = torch.bfloat16 if dtype is None else dtype
    _dtype_name(dtype)
    config = _cut_config(kind, text_layers, vision_blocks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = _model_class(kind)._from_config(_config_object(config), dtype=dtype).eval()
    finally:
        torch.random.set_rng_state(rng_state)
    model.generation_config = GenerationConfig(**GENERATION[kind])
    model.save_pretrained(out, max_shard_size=max_shard_size)
    del model
    _write_small_files(kind, out, config, dtype, build_shaped_tokenizer(kind))
    return out


def _write_small_files(kind: str, out: Path, config: dict, dtype, tokenizer) -> None:
    """config.json in the released layout (over the one save_pretrained wrote), tokenizer, processor configs."""
    import torch

    config = dict(config)
    config["torch_dtype" if kind == "qwen2.5-vl-7b" else "dtype"] = _dtype_name(torch.bfloat16 if dtype is None
                                                                               else dtype)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR[kind], indent=2) + "\n")
    if kind in VIDEO_PREPROCESSOR:
        (out / "video_preprocessor_config.json").write_text(json.dumps(VIDEO_PREPROCESSOR[kind], indent=2) + "\n")


def _weights_digest(kind: str, text_layers: int, vision_blocks: int, dtype, seed: int) -> str:
    """What the weight files depend on (not the tokenizer: the ids are fixed by the config)."""
    import torch

    key = {"kind": kind, "config": _cut_config(kind, text_layers, vision_blocks), "seed": seed,
           "dtype": _dtype_name(torch.bfloat16 if dtype is None else dtype), "version": _BUILD_VERSION,
           "generation": GENERATION[kind]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _folder_digest(kind: str, weights: str, tokenizer) -> str:
    key = {"weights": weights, "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
           "pre": PREPROCESSOR[kind], "video": VIDEO_PREPROCESSOR.get(kind)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def shaped_path(kind: str, *, text_layers: int = 2, vision_blocks: int = 2, dtype=None, seed: int = 0) -> Path:
    """The cache folder of this checkpoint: `shapes_home()/<kind>-<hash>`, the hash covering the
    weights' recipe, the tokenizer and the processor configs."""
    _check_kind(kind)
    weights = _weights_digest(kind, text_layers, vision_blocks, dtype, seed)
    return shapes_home() / f"{kind}-{_folder_digest(kind, weights, build_shaped_tokenizer(kind))}"


def _link_weights(kind: str, weights: str, out: Path) -> bool:
    """Hard-link the weight files of a cached folder with the same weights (another tokenizer) into `out`."""
    for donor in sorted(shapes_home().glob(f"{kind}-*")):
        marker = donor / MARKER
        if not (donor / "config.json").is_file() or not marker.is_file():
            continue
        if json.loads(marker.read_text()).get("weights") != weights:
            continue
        out.mkdir(parents=True, exist_ok=True)
        for f in donor.iterdir():
            if f.suffix == ".safetensors" or f.name in ("model.safetensors.index.json", "generation_config.json"):
                try:
                    os.link(f, out / f.name)
                except OSError:
                    shutil.copy2(f, out / f.name)
        return True
    return False


def ensure_shaped_checkpoint(kind: str, *, text_layers: int = 2, vision_blocks: int = 2, dtype=None,
                             seed: int = 0) -> Path:
    """The cached folder of `build_shaped_checkpoint(kind, ...)`, built on first use (atomically: a
    temporary folder renamed into place). A cached folder with the same weights but another
    tokenizer lends its weight files (hard links) instead of a new random initialisation."""
    _check_kind(kind)
    weights = _weights_digest(kind, text_layers, vision_blocks, dtype, seed)
    tokenizer = build_shaped_tokenizer(kind)
    target = shapes_home() / f"{kind}-{_folder_digest(kind, weights, tokenizer)}"
    def build(tmp: Path) -> None:
        if _link_weights(kind, weights, tmp):
            _write_small_files(kind, tmp, _cut_config(kind, text_layers, vision_blocks), dtype, tokenizer)
        else:
            build_shaped_checkpoint(kind, tmp, text_layers=text_layers, vision_blocks=vision_blocks, dtype=dtype,
                                    seed=seed)
        (tmp / MARKER).write_text(json.dumps({"weights": weights}) + "\n")
        os.chmod(tmp, 0o755)

    return build_atomic(target, build)

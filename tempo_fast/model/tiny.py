"""The tiny presets: a Qwen2.5-VL small enough for tests and the CPU demo, with an offline tokenizer
trained on the project's own text. Nothing is ever downloaded.

- `tiny`: the same model pretrained on the project's own synthetic clips (`tempo-fast pretrain`,
  tempo_fast/pretrain): the weights ship with the package (weights/tiny.safetensors, ~0.9 MB, with
  weights/manifest.json: command, config, seeds, steps, data settings, git sha, sha256, held-out
  metrics). The demo starts from it, as Tempo-R0 starts from a pretrained Qwen2.5-VL.
- `tiny-random`: random init (`init_weights`, std INIT_STD), for unit tests.

`build_tiny(out_dir, seed=0, weights=None)` writes a checkpoint folder that `load_model(out_dir)`
(and plain `from_pretrained`) reads like any Qwen2.5-VL checkpoint:
- `config.json` + `model.safetensors`: text model hidden 64, 2 layers, 4 heads (2 kv), head_dim 16,
  mrope_section [2, 3, 3] (sums to head_dim/2, Qwen's 1/4 : 3/8 : 3/8 split); vision tower depth 2,
  hidden 32, 2 heads, patch 14, temporal patch 2, spatial merge 2, out_hidden_size 64;
  tokens_per_second 2 (as the released Qwen2.5-VL checkpoints). About 0.22 M parameters, 0.9 MB.
  Weights: N(0, 0.1) for every linear, conv and embedding (transformers' 0.02 is ~6x too small at
  these widths), or those of the safetensors file `weights`.
- the tokenizer: byte-level BPE (at most 1024 ids) with Qwen2's pre-tokenizer split (digits one by
  one, so every timestamp and answer number tokenizes the same way), trained with `tokenizers` on
  text this module writes from the synthetic set's vocabulary (`tempo_fast.data.synthetic`), the
  answer grammar, ETA timestamps, the prompt instruction and the pretraining questions
  (`tempo_fast.pretrain.tasks`). Qwen's special tokens come first (ids 0-7);
  eos = <|im_end|>, pad = <|endoftext|>; a Qwen-style chat template with video content.
  The config's token ids (video_token_id, vision_start/end, image, eos, pad) are this tokenizer's.
- `preprocessor_config.json`: patch/merge/temporal sizes, CLIP mean/std and small pixel bounds
  (56x56 to 112x112 per frame, so a 64x64 synthetic clip gives 4 video tokens per temporal patch).

Everything is a pure function of `seed` (and `weights`): the same seed gives the same weights and
tokenizer. Cache folders live in `$TEMPO_FAST_HOME` (default `~/.cache/tempo_fast`, `tiny_path()`);
`ensure_tiny()` builds each once, in a temporary folder renamed into place, so concurrent builders
never see a half-written checkpoint. The pretrained folder's name carries the weights' sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
VOCAB_SIZE = 1024
TINY_NAME = "tiny-qwen2_5_vl"
RANDOM_NAME = "tiny-random-v2-qwen2_5_vl"  # v2: weights from init_weights (v1 had transformers' 0.02)
INIT_STD = 0.1  # ~1/sqrt(hidden) for hidden 64 (text) and 32 (vision)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "tiny.safetensors"  # the pretrained `tiny` preset (tempo-fast pretrain)
MANIFEST_FILE = WEIGHTS_DIR / "manifest.json"
# Small frames for a small model: 56x56 up to 112x112 pixels, 4 to 16 video tokens per temporal patch.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112
# Qwen2's pre-tokenizer pattern: contractions, letter runs, single digits, punctuation, spaces.
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2-VL's chat template, cut to what this package uses: text and video (or image) content.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_path() -> Path:
    """`$TEMPO_FAST_HOME/tiny-qwen2_5_vl`; the presets' cache folders are its siblings."""
    home = os.environ.get("TEMPO_FAST_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tempo_fast")
    return Path(home) / TINY_NAME


def _corpus() -> list[str]:
    """Training text for the tokenizer: every query the synthetic set can ask, answers in the
    grammar, ETA timestamps, the prompt instruction and chat scaffolding."""
    from tempo_fast.data.synthetic import ACTIONS, COLOURS, SHAPES, SIZES, query_text
    from tempo_fast.model.prompt import INSTRUCTION, SYSTEM_PROMPT

    lines = []
    for size in (None, *SIZES):
        for colour in COLOURS:
            for shape in SHAPES:
                for action in ACTIONS:
                    targets = [c for c in COLOURS if c != colour] if action == "change" else [None]
                    for target in targets:
                        fields = dict(size=size, colour=colour, shape=shape, action=action, target=target)
                        lines.append(query_text(fields))
    for k in range(0, 400, 3):
        a, b = k / 10, k / 10 + 2.5 + (k % 7)
        lines.append(f"<{a:.1f} seconds>")
        lines.append(f"<think>the event happens from {a:.1f} to {b:.1f} seconds</think>"
                     f"<answer>{a:.1f} to {b:.1f}</answer>")
        lines.append(f"<answer>{a:.1f} to {b:.1f}; {b + 1:.1f} to {b + 3.5:.1f}</answer>")
    lines += ["<think>no such event is shown</think><answer>none</answer>", "<answer>none</answer>",
              "<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n", INSTRUCTION,
              "<|im_start|>user\n", "<|im_start|>assistant\n", "Query: ", "0123456789 . ; to none"]
    from tempo_fast.pretrain.tasks import vocabulary_lines  # the pretraining questions and answers
    return lines + vocabulary_lines()


def build_tokenizer():
    """The tiny preset's tokenizer as a transformers fast tokenizer (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, clean_up_tokenization_spaces=False,
                                   model_max_length=32768)
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_config(tokenizer):
    """The tiny Qwen2_5_VLConfig, its token ids taken from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(vocab_size=len(tokenizer), initializer_range=INIT_STD, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=2, initializer_range=INIT_STD, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
                  out_hidden_size=64, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
                            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                            pad_token_id=ids["<|endoftext|>"])


def _preprocessor_config() -> dict:
    from tempo_fast.video.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "image_mean": list(OPENAI_CLIP_MEAN),
            "image_std": list(OPENAI_CLIP_STD), "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}


def init_weights(model, std: float = INIT_STD) -> None:
    """Every linear, conv and embedding weight ~ N(0, std), biases 0 (norms keep their ones).

    transformers' default std (initializer_range 0.02) suits hidden sizes of ~1000-4000; at hidden
    64 / 32 it makes attention start uniform over the whole prompt, and the tiny model then failed
    to learn even the colour of a clip's single object in 400 steps; ~1/sqrt(hidden) learns."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d, torch.nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()


def build_tiny(out_dir, *, seed: int = 0, weights=None) -> Path:
    """Write the tiny preset to `out_dir` and return its path: weights drawn from `seed`
    (`init_weights`), or read from the safetensors file `weights` (e.g. the shipped pretrained one)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer)
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).float().eval()
        init_weights(model)
    finally:
        torch.random.set_rng_state(rng_state)
    model.generation_config = GenerationConfig(eos_token_id=[config.text_config.eos_token_id],
                                               pad_token_id=config.text_config.pad_token_id,
                                               bos_token_id=config.text_config.bos_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(), indent=2) + "\n")
    if weights is not None:  # a file save_pretrained wrote for this config: it replaces the random one
        shutil.copyfile(weights, out / "model.safetensors")
        _, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, local_files_only=True,
                                                                     output_loading_info=True)
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise ValueError(f"build_tiny: {str(weights)!r} does not fit the tiny config: {bad}")
    return out


def tokenizer_digest(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary and merges order (what the shipped weights depend on)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_manifest() -> dict:
    """The manifest of the shipped pretrained weights (tempo_fast/model/weights/manifest.json)."""
    if not (WEIGHTS_FILE.is_file() and MANIFEST_FILE.is_file()):
        raise FileNotFoundError(f"the pretrained tiny weights are missing ({WEIGHTS_FILE} and {MANIFEST_FILE}); "
                                "rebuild them with `tempo-fast pretrain`, or use the random-init preset 'tiny-random'")
    return json.loads(MANIFEST_FILE.read_text())


def build_atomic(target: Path, build) -> Path:
    """`target`, built on first use by `build(tmp)` into a temporary sibling folder renamed into place,
    so concurrent builders never see a half-written checkpoint (`config.json` marks a finished one)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not another builder winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_tiny(*, seed: int = 0, pretrained: bool = False) -> Path:
    """The cached tiny preset folder, built on first use (atomically: temp folder, then rename).

    pretrained=False: random init from `seed` (the `tiny-random` preset, for unit tests);
    pretrained=True: the shipped weights (the `tiny` preset), checked against their manifest
    (file sha256, tokenizer digest); the folder name carries the file's sha256, so new weights
    never meet an old cache."""
    if not pretrained:
        name = RANDOM_NAME if seed == 0 else f"{RANDOM_NAME}-seed{seed}"
        return build_atomic(tiny_path().with_name(name), lambda tmp: build_tiny(tmp, seed=seed))
    manifest = shipped_manifest()
    target = tiny_path().with_name(f"{TINY_NAME}-{manifest['sha256'][:12]}")

    def build(tmp):
        actual = file_sha256(WEIGHTS_FILE)
        if actual != manifest["sha256"]:
            raise ValueError(f"the shipped tiny weights {WEIGHTS_FILE} have sha256 {actual}, but "
                             f"{MANIFEST_FILE} says {manifest['sha256']}")
        tokenizer = build_tokenizer()
        if tokenizer_digest(tokenizer) != manifest["tokenizer_sha256"]:
            raise ValueError("the tiny tokenizer built here differs from the one the shipped weights were "
                             "trained with (another `tokenizers` version?); rebuild them with `tempo-fast pretrain`")
        build_tiny(tmp, weights=WEIGHTS_FILE)
    return build_atomic(target, build)

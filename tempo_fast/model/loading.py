"""Loading Qwen2.5-VL / Qwen3-VL checkpoints from local folders into a `VLModel`.

`load_model(name_or_path)` reads `config.json` (model_type `qwen2_5_vl` or `qwen3_vl`), builds
the matching `*ForConditionalGeneration` with `from_pretrained` (bf16 on CUDA and fp32 on CPU
unless `dtype` is given; SDPA attention, or flash-attention 2 when `flash_attn` imports and the
device is CUDA) and its tokenizer with the chat template from the same folder; pixel mean/std and
per-frame pixel bounds come from its video_preprocessor_config.json, else preprocessor_config.json,
when present. It never touches the network (`local_files_only=True`). `"tiny"` is the offline preset of `tempo_fast.model.tiny`
(pretrained weights shipped with the package), `"tiny-random"` the same model randomly initialised.

Errors name the path and what is wrong: a missing folder, config.json, tokenizer files, weights
or weight shards named by the index (FileNotFoundError); a checkpoint that is not one of the two
video-LLMs, a config that is not JSON, a weight file whose safetensors header does not read
(ValueError).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

FAMILIES = {  # model_type -> transformers class name
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
}
# Pixel normalisation when the folder has no preprocessor_config.json.
_DEFAULT_MEAN_STD = {
    "qwen2_5_vl": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "qwen3_vl": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


@dataclass
class VLModel:
    """A loaded video-LLM: the transformers model, its tokenizer and what preprocessing needs."""

    model: torch.nn.Module          # Qwen2_5_VLForConditionalGeneration or Qwen3VLForConditionalGeneration
    tokenizer: object               # the checkpoint's fast tokenizer (with its chat template)
    family: str                     # "qwen2_5_vl" or "qwen3_vl"
    path: Path                      # the checkpoint folder
    image_mean: tuple = field(default=None)  # per-channel pixel mean (preprocessor_config.json or family default)
    image_std: tuple = field(default=None)   # per-channel pixel std
    min_pixels: int = field(default=None)    # default per-frame pixel bounds for the resize
    max_pixels: int = field(default=None)    # (preprocessor_config.json, else Qwen2.5-VL's video bounds)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"VLModel: family must be one of {tuple(FAMILIES)}, got {self.family!r}")
        mean, std = _DEFAULT_MEAN_STD[self.family]
        self.image_mean = tuple(mean if self.image_mean is None else self.image_mean)
        self.image_std = tuple(std if self.image_std is None else self.image_std)
        self.path = Path(self.path)
        from tempo_fast.video.preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS
        self.min_pixels = int(VIDEO_MIN_PIXELS if self.min_pixels is None else self.min_pixels)
        self.max_pixels = int(VIDEO_MAX_PIXELS if self.max_pixels is None else self.max_pixels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def config(self):
        return self.model.config

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end a completion: the generation config's eos ids plus the tokenizer's eos."""
        ids = []
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id,
                       getattr(self.model.config.get_text_config(), "eos_token_id", None)):
            for i in ([source] if isinstance(source, int) else source or []):
                if i not in ids:
                    ids.append(int(i))
        return ids

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = getattr(self.model.config.get_text_config(), "pad_token_id", None)
        return int(self.eos_token_ids[0] if pad is None else pad)

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @property
    def vision(self):
        """The vision tower's config (patch_size, spatial_merge_size, temporal_patch_size, ...)."""
        return self.model.config.vision_config

    @property
    def tokens_per_second(self) -> float:
        """Temporal rotary ids per second of video: the config's value for Qwen2.5-VL, 0 for Qwen3-VL
        (its native layout puts time in the timestamp text, see video/eta.py)."""
        if self.family == "qwen3_vl":
            return 0.0
        return float(getattr(self.vision, "tokens_per_second", 2))


def _read_config(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"load_model: checkpoint folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"load_model: {str(path)!r} is not a folder (expected a checkpoint folder "
                                "with config.json, weights and tokenizer files)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"load_model: {str(path)!r} has no config.json; is it a transformers checkpoint?")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"load_model: {str(config_file)!r} is not valid JSON: {err}") from err


def _family(config: dict, path: Path) -> str:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"load_model: {str(path)!r} has model_type {model_type!r}, which is not a video-LLM; "
                         f"expected one of {', '.join(FAMILIES)}")
    return model_type


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise FileNotFoundError(f"load_model: {str(path)!r} has no tokenizer files (expected one of "
                                f"{', '.join(_TOKENIZER_FILES)})")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if getattr(tokenizer, "chat_template", None) is None:  # older checkpoints keep it beside the tokenizer
        if (path / "chat_template.jinja").is_file():
            tokenizer.chat_template = (path / "chat_template.jinja").read_text()
        elif (path / "chat_template.json").is_file():
            tokenizer.chat_template = json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return tokenizer


def _preprocessor(path: Path) -> dict:
    """image_mean / image_std / min_pixels / max_pixels (None when absent) from the video processor's
    config, video_preprocessor_config.json (Qwen3-VL ships one), else preprocessor_config.json: the
    order in which transformers' video processor looks for them."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if (path / name).is_file():
            try:
                data = json.loads((path / name).read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"load_model: {str(path / name)!r} is not valid JSON: {err}") from err
            break
    else:
        data = {}
    size = data.get("size") or {}
    return {"image_mean": data.get("image_mean"), "image_std": data.get("image_std"),
            "min_pixels": data.get("min_pixels", size.get("shortest_edge")),
            "max_pixels": data.get("max_pixels", size.get("longest_edge"))}


def _check_weights(path: Path) -> None:
    """The weight files exist and their safetensors headers read (before transformers sees them, whose
    errors name neither the folder nor the file): a sharded index's every shard, else one weights file."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
            raise ValueError(f"load_model: {str(index)!r} is not a safetensors index (a JSON weight_map): {err}") from err
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            raise FileNotFoundError(f"load_model: {str(path)!r} lacks {len(absent)} of the {len(shards)} weight shards "
                                    f"its index names: {', '.join(absent[:3])}")
        files = [path / s for s in shards]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif any((path / name).is_file() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        return
    else:
        raise FileNotFoundError(f"load_model: {str(path)!r} has no weights (expected model.safetensors or "
                                "model.safetensors.index.json with its shards)")
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(file, framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"load_model: weight file {str(file)!r} is not a readable safetensors file: {err}") from err


def default_attention(device: torch.device) -> str:
    """"flash_attention_2" on CUDA when flash_attn is installed, else "sdpa"."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_model(name_or_path, *, device="cpu", dtype: torch.dtype | None = None,
               attn_implementation: str | None = None) -> VLModel:
    """A `VLModel` from a local checkpoint folder, or the tiny preset for `"tiny"` / `"tiny-random"`.

    device: where the weights go. dtype: default bf16 on CUDA, fp32 elsewhere.
    attn_implementation: default `default_attention(device)`.
    """
    import transformers

    if str(name_or_path) in ("tiny", "tiny-random"):  # pretrained / random-init presets
        from tempo_fast.model.tiny import ensure_tiny
        path = ensure_tiny(pretrained=str(name_or_path) == "tiny")
    else:
        path = Path(name_or_path).expanduser()
    config = _read_config(path)
    family = _family(config, path)
    tokenizer = _load_tokenizer(path)
    _check_weights(path)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn = attn_implementation or default_attention(device)
    cls = getattr(transformers, FAMILIES[family])
    model = cls.from_pretrained(path, dtype=dtype, attn_implementation=attn, local_files_only=True)
    model.to(device).eval()
    return VLModel(model=model, tokenizer=tokenizer, family=family, path=path, **_preprocessor(path))

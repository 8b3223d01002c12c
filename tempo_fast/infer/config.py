"""`InferConfig`: the settings of grounding inference (`ground`, `predict`, `tempo-fast
ground/predict`; the command's flags are generated from it), and the device-dependent defaults
of its batching."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SCORES = ("frequency", "likelihood")
# Prompts and padded prompt tokens per forward when the config leaves them to the device. On a
# CPU a batch of 8 tiny prompts amortises the per-step overhead; on a GPU 16 prompts keep a
# Qwen2.5-VL-7B decode step busy, and 65536 prefill tokens (8 prompts of 64 frames) bound the
# prefill's activations (~8 GiB of MLP intermediates in bf16).
DEVICE_BATCH = {"cpu": (8, 16384), "cuda": (16, 65536)}


@dataclass
class InferConfig:
    """Settings of grounding inference (`ground`, `predict`, `tempo-fast ground/predict`)."""

    model: str = "tiny"  # "tiny" or a local Qwen2.5-VL / Qwen3-VL checkpoint folder
    device: str = "auto"  # "auto" (CUDA when present; torchrun: cuda:LOCAL_RANK), "cpu", "cuda:0", ...
    dtype: str | None = None  # "bfloat16", "float16", "float32"; None: the loader's default for the device
    attn_implementation: str | None = None  # "sdpa", "flash_attention_2", "eager"; None: the loader's default
    num_frames: int = 16  # frames sampled per video (a multiple of 2: Qwen merges frame pairs)
    alpha: float = 0.5  # SAA mix of content-driven and uniform density; 0 = uniform sampling
    probe_fps: float = 4.0  # SAA probe rate (frames/s) for the variation scores
    min_pixels: int | None = None  # lower bound of pixels per frame; None: the checkpoint's (as in training)
    max_pixels: int | None = None  # upper bound of pixels per frame; None: the checkpoint's
    decode_resize: bool = True  # resize inside the decoder to the model's frame size (faster; bilinear)
    num_samples: int = 8  # sampled answers per query for scored candidates (0: greedy answer only)
    temperature: float = 1.0  # sampling temperature of the candidates
    top_p: float = 1.0  # nucleus sampling of the candidates (1: off)
    top_k: int = 0  # top-k sampling of the candidates (0: off)
    max_new_tokens: int = 64  # generation limit per answer
    merge_iou: float = 0.5  # candidate windows with IoU >= this (to a cluster's seed) are merged
    score: Literal["frequency", "likelihood"] = "frequency"  # window score: "frequency" or "likelihood" (see the module docstring)
    max_windows: int = 10  # windows kept per query (the official mAP reads 10)
    seed: int = 0  # sampling seed; each query draws from its own generator seeded by (seed, video, query)
    batch_size: int | None = None  # prompts per forward (`predict`); None: chosen for the device (CPU 8, CUDA 16)
    batch_tokens: int | None = None  # padded prompt tokens per forward at most; None: chosen for the device (CPU 16384, CUDA 65536)
    workers: int = 2  # threads decoding and preprocessing ahead of the model (0: inline)
    prefetch: int = 8  # queries prepared ahead of the batch the model is answering, at most (bounded queue)
    frame_cache_mb: int = 1024  # MiB of sampled frames kept per predict run (LRU): a video decoded once; 0: off

    def __post_init__(self):
        def bad(name, expected):
            raise ValueError(f"InferConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.num_frames) or self.num_frames < 2 or self.num_frames % 2:
            bad("num_frames", "an even int >= 2")
        if not 0.0 <= self.alpha <= 1.0:
            bad("alpha", "in [0, 1]")
        for name in ("probe_fps", "temperature"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                bad(name, "a number > 0")
        for name in ("min_pixels", "max_pixels"):
            if getattr(self, name) is not None and (not is_int(getattr(self, name)) or getattr(self, name) < 1):
                bad(name, "None or an int >= 1")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"InferConfig: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        for name, low in (("num_samples", 0), ("top_k", 0), ("max_new_tokens", 1), ("max_windows", 1),
                          ("workers", 0), ("prefetch", 1), ("frame_cache_mb", 0)):
            if not is_int(getattr(self, name)) or getattr(self, name) < low:
                bad(name, f"an int >= {low}")
        for name in ("batch_size", "batch_tokens"):
            if getattr(self, name) is not None and (not is_int(getattr(self, name)) or getattr(self, name) < 1):
                bad(name, "None or an int >= 1")
        if not 0.0 < self.top_p <= 1.0:
            bad("top_p", "in (0, 1]")
        if not 0.0 < self.merge_iou <= 1.0:
            bad("merge_iou", "in (0, 1]")
        if self.score not in SCORES:
            bad("score", f"one of {SCORES}")
        if self.dtype is not None and not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            bad("dtype", "None or a torch dtype name such as 'bfloat16'")


def batch_limits(config: InferConfig, device) -> tuple[int, int]:
    """(prompts, padded prompt tokens) per forward: the config's, else the device's defaults."""
    size, tokens = DEVICE_BATCH.get(torch.device(device).type, DEVICE_BATCH["cpu"])
    return (size if config.batch_size is None else config.batch_size,
            tokens if config.batch_tokens is None else config.batch_tokens)

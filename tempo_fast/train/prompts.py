"""Frames and prompts built once: what `GroundingSamples` and the evaluation share.

Building a grounding prompt costs a decode of the video (SAA's probe decode included: ~20 ms for a
synthetic clip), a resize and normalisation of its frames and a tokenisation (~8 ms). A training
run asks for each sample thousands of times and the demo trains and scores several models on the
same clips, so both are built once:

- `PromptCache`: frames per (video, sampling, alpha, num_frames), pixel tensors per (video, frame
  settings, preprocessing) shared by every query of the video, prompts per (video, query, frame
  settings, preprocessing). "Preprocessing" is what a prompt depends on in the model: its family,
  tokenizer, pixel mean/std and bounds, patch sizes, dtype and device (`model_signature`), so two
  checkpoints of one model (the base and its fine-tunes) share prompts and two different models
  never do.
- `shared_prompt_cache()`: a context in which every `GroundingSamples` and `record_prompts` uses
  one process-wide cache (the demo wraps its whole run in it). Outside it each user holds its own
  cache, which lives as long as that user: nothing grows behind a long training job's back.
"""
from __future__ import annotations

import contextlib
import hashlib

import torch

_ACTIVE: "PromptCache | None" = None


def frames_key(path, data_cfg) -> tuple:
    """What the sampled frames of a video depend on."""
    alpha = data_cfg.alpha if data_cfg.sampling == "saa" else 0.0
    return str(path), data_cfg.sampling, float(alpha), int(data_cfg.num_frames)


def sample_frames(path, data_cfg):
    """`data_cfg.num_frames` frames of the video at `path`: SAA (`alpha`) or uniform times (SAA at
    alpha 0, which skips the probe)."""
    from tempo_fast.video import saa_sample

    if data_cfg.sampling not in ("saa", "uniform"):
        raise ValueError(f"sample_frames: sampling must be 'saa' or 'uniform', got {data_cfg.sampling!r}")
    alpha = data_cfg.alpha if data_cfg.sampling == "saa" else 0.0
    return saa_sample(path, data_cfg.num_frames, alpha=alpha)


def model_signature(vl, device) -> tuple:
    """What a prompt built for `vl` on `device` depends on (module docstring)."""
    tokenizer = vl.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    vision = vl.vision
    return (vl.family, hashlib.sha256(text.encode()).hexdigest(), tuple(vl.image_mean), tuple(vl.image_std),
            int(vl.min_pixels), int(vl.max_pixels), int(vision.patch_size), int(vision.spatial_merge_size),
            int(vision.temporal_patch_size), str(vl.dtype), str(torch.device(device)),
            getattr(vl, "tokens_per_second", None), getattr(vl, "video_token_id", None))


class PromptCache:
    """Frames, pixels and prompts built once (module docstring)."""

    def __init__(self):
        self.frames: dict[tuple, object] = {}
        self.pixels: dict[tuple, torch.Tensor] = {}
        self.prompts: dict[tuple, object] = {}
        self._signatures: dict[int, tuple] = {}  # id(vl) -> (vl, signature); vl kept so the id stays its own

    def signature(self, vl, device) -> tuple:
        key = id(vl), str(device)
        if key not in self._signatures:
            self._signatures[key] = (vl, model_signature(vl, device))
        return self._signatures[key][1]

    def frames_of(self, path, data_cfg):
        """The video's sampled frames (decoded on first use)."""
        key = frames_key(path, data_cfg)
        if key not in self.frames:
            self.frames[key] = sample_frames(path, data_cfg)
        return self.frames[key]

    def prompt(self, vl, path, query: str, data_cfg, device):
        """The `PromptInputs` of `query` over the video at `path` as `data_cfg` samples it."""
        from tempo_fast.model import build_prompt

        video = frames_key(path, data_cfg) + (data_cfg.min_pixels, data_cfg.max_pixels, self.signature(vl, device))
        key = video + (query,)
        prompt = self.prompts.get(key)
        if prompt is None:
            prompt = build_prompt(vl, self.frames_of(path, data_cfg), query, min_pixels=data_cfg.min_pixels,
                                  max_pixels=data_cfg.max_pixels, device=device)
            shared = self.pixels.setdefault(video, prompt.pixel_values_videos)
            if shared.shape == prompt.pixel_values_videos.shape and torch.equal(shared, prompt.pixel_values_videos):
                prompt.pixel_values_videos = shared  # one tensor for all the video's queries
            self.prompts[key] = prompt
        return prompt

    def clear(self) -> None:
        self.frames.clear()
        self.pixels.clear()
        self.prompts.clear()
        self._signatures.clear()


def current_cache() -> PromptCache:
    """The process-wide cache inside `shared_prompt_cache()`, else a fresh one for the caller to keep."""
    return _ACTIVE if _ACTIVE is not None else PromptCache()


@contextlib.contextmanager
def shared_prompt_cache():
    """Within this context every GroundingSamples and record_prompts shares one PromptCache (yielded);
    it is dropped on exit. Nested uses share the outer one."""
    global _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    _ACTIVE = PromptCache()
    try:
        yield _ACTIVE
    finally:
        _ACTIVE.clear()
        _ACTIVE = None

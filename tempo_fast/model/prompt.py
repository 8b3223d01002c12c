"""Grounding prompts as model inputs: frames + query -> ETA chat prompt, pixels and position ids.

`build_prompt(vl, frames, query)` returns a `PromptInputs` for one video and one query:
- text: the chat prompt of `tempo_fast.video.eta.eta_prompt` (system turn, user turn holding the
  video in the ETA layout - a `<12.5 seconds>` timestamp before each temporal patch - then
  `INSTRUCTION`, which asks for the answer grammar of DESIGN.md, and `Query: ...` last, the layout
  of the tiny model's pretraining questions, so that the prompt ends as they do), ending with the
  assistant turn opening. `timestamps=False` writes Qwen's plain layout instead (one
  `<|vision_start|>` ... `<|vision_end|>` around the whole video, no timestamp text): the model's
  native uniform-sampling prompt, used to check our position ids against transformers';
- input_ids: the text tokenized with one `<|video_pad|>` per temporal patch, expanded to
  (h/m)(w/m) pads per patch by `eta_input_ids` (tokenizing thousands of pads is slow);
- pixels: `tempo_fast.video.preprocess.video_inputs` with the checkpoint's patch/merge sizes and
  pixel mean/std, computed on `device` in the model's dtype;
- position_ids `[3, 1, L]`: `eta_position_ids` from the frames' real pts (time-true temporal ids
  for Qwen2.5-VL, `tokens_per_second` of its config; Qwen3-VL: tokens_per_second = 0, its native
  index), `after_vision="max"` (the original Qwen2-VL rule; transformers >= 5.3 computes "spatial",
  which differs only after the video and only when the video spans more temporal ids than rows
  or columns). `next_position` = max id + 1 is where the first generated token goes.
`forward_kwargs(prompt)` gives the kwargs for `vl.model(**kwargs)` on the whole prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tempo_fast.video.eta import VIDEO_PAD, VISION_END, VISION_START, eta_input_ids, eta_position_ids, eta_prompt

SYSTEM_PROMPT = "You are a helpful assistant."
# Short on purpose: the tiny model's learning slows with the prompt's length (the break of its
# plateau on the query-vs-clip comparison moved from ~500 to ~1,500+ steps going from ~30 to ~229 tokens).
INSTRUCTION = "When does it happen? Answer <answer>START to END</answer> or <answer>none</answer>."


@dataclass
class PromptInputs:
    """One video + query prompt, ready for the model (all tensors on one device)."""

    input_ids: torch.Tensor            # [1, L] long: chat prompt with the video pads expanded
    attention_mask: torch.Tensor       # [1, L] long: all ones
    position_ids: torch.Tensor         # [3, 1, L] long: temporal/height/width rotary ids (ETA time-true)
    pixel_values_videos: torch.Tensor  # [N, C*tp*p*p] float (1176 for Qwen2.5-VL), in the model's dtype
    video_grid_thw: torch.Tensor       # [1, 3] long: (grid_t, h, w) in patches
    second_per_grid_ts: torch.Tensor | None  # [1] float32 seconds per temporal patch (None for Qwen3-VL)
    next_position: int                 # rotary id of the first generated token (position_ids.max() + 1)
    duration: float                    # video length in seconds (Frames.duration, else the last pts)
    pts: torch.Tensor                  # float64 [T]: times of the frames given to the vision encoder
    text: str = ""                     # the prompt text, one pad per temporal patch (for logs)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device) -> "PromptInputs":
        """A copy with every tensor but pts on `device`."""
        move = {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "pts" else v)
                for k, v in self.__dict__.items()}
        return PromptInputs(**move)


def _frames_pts(frames):
    """(frames as video_inputs takes them, pts float64, duration seconds or None)."""
    if hasattr(frames, "data") and hasattr(frames, "pts"):
        duration = getattr(frames, "duration", None)
        return frames, torch.as_tensor(frames.pts, dtype=torch.float64).cpu(), duration
    if isinstance(frames, (tuple, list)) and len(frames) == 2:
        return frames, torch.as_tensor(frames[1], dtype=torch.float64).cpu(), None
    raise TypeError(f"build_prompt: frames must be a tempo_fast.video.Frames or a (data, pts) pair, "
                    f"got {type(frames).__name__}")


def _plain_prompt(grid_t: int, question: str, system: str | None) -> str:
    """Qwen's own chat layout for one video (no timestamps), one pad per temporal patch."""
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    video = f"{VISION_START}{VIDEO_PAD * grid_t}{VISION_END}"
    return f"{head}<|im_start|>user\n{video}{question}<|im_end|>\n<|im_start|>assistant\n"


def question_text(query: str) -> str:
    """The text after the video in the user turn."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"build_prompt: query must be a non-empty string, got {query!r}")
    return f"{INSTRUCTION}\nQuery: {query.strip()}"


def build_prompt(vl, frames, query: str, *, min_pixels: int | None = None, max_pixels: int | None = None,
                 size: tuple[int, int] | None = None, device=None, timestamps: bool = True,
                 system: str | None = None, after_vision: str = "max") -> PromptInputs:
    """The grounding prompt of `query` over `frames` (a `Frames` or `(uint8 [T, C, H, W], pts)`).

    min_pixels / max_pixels: per-frame pixel bounds for Qwen's resize (default: the checkpoint's
        preprocessor_config.json, else Qwen2.5-VL's video defaults); `size=(h, w)` fixes the size.
    device: where the tensors go (default: the model's device).
    timestamps: the ETA layout (True) or Qwen's plain layout without timestamp text (False).
    system: the system turn (None: the model family's default, as its chat template writes).
    after_vision: "max" or "spatial", see tempo_fast.video.eta.
    """
    source, pts, duration = _frames_pts(frames)
    device = vl.device if device is None else torch.device(device)
    vision = vl.vision
    patch, merge, tp = int(vision.patch_size), int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    from tempo_fast.video.preprocess import video_inputs

    pixels = video_inputs(source, min_pixels=vl.min_pixels if min_pixels is None else min_pixels,
                          max_pixels=vl.max_pixels if max_pixels is None else max_pixels, size=size,
                          temporal_patch_size=tp, patch_size=patch, merge_size=merge, mean=vl.image_mean,
                          std=vl.image_std, device=device, dtype=vl.dtype)
    grid = pixels["video_grid_thw"].cpu()
    question = question_text(query)
    if timestamps:
        text = eta_prompt(pts, grid, question, model=vl.family, system=system, temporal_patch_size=tp,
                          merge_size=merge, expand=False)
    else:
        from tempo_fast.video.eta import DEFAULT_SYSTEM
        text = _plain_prompt(int(grid[0, 0]), question, DEFAULT_SYSTEM[vl.family] if system is None else system)
    input_ids = eta_input_ids(text, vl.tokenizer, grid, merge_size=merge)
    position_ids = eta_position_ids(input_ids, grid, pts, tokens_per_second=vl.tokens_per_second,
                                    spatial_merge_size=merge, temporal_patch_size=tp,
                                    video_token_id=vl.video_token_id, after_vision=after_vision)
    if duration is None or not duration > 0:
        duration = float(pts[-1]) if pts[-1] > 0 else 1.0
    return PromptInputs(
        input_ids=input_ids.to(device),
        attention_mask=torch.ones_like(input_ids, device=device),
        position_ids=position_ids.to(device),
        pixel_values_videos=pixels["pixel_values_videos"],
        video_grid_thw=pixels["video_grid_thw"],
        second_per_grid_ts=pixels["second_per_grid_ts"] if vl.family == "qwen2_5_vl" else None,
        next_position=int(position_ids.max()) + 1,
        duration=float(duration),
        pts=pts,
        text=text,
    )


def forward_kwargs(prompt: PromptInputs) -> dict:
    """kwargs for `vl.model(**kwargs)` over the whole prompt (None entries left out)."""
    out = {"input_ids": prompt.input_ids, "attention_mask": prompt.attention_mask,
           "position_ids": prompt.position_ids, "pixel_values_videos": prompt.pixel_values_videos,
           "video_grid_thw": prompt.video_grid_thw}
    if prompt.second_per_grid_ts is not None:
        out["second_per_grid_ts"] = prompt.second_per_grid_ts
    return out

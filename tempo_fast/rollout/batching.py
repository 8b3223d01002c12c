"""Batching: B prompts (different videos, lengths and ETA layouts) as one prefill, and the plan
that cuts a list of prompts into such batches.

One prefill of B prompts (`pad_prompts`):

    input_ids       [B, Lmax]     each prompt's ids, RIGHT-padded with the pad id
    position_ids    [3, B, Lmax]  each prompt's own 3-D rotary ids (ETA time-true); the pad slots
                                  continue at next_position + k (never read, see below)
    pixels          the B videos' patches concatenated in batch order, video_grid_thw [B, 3] and
                    second_per_grid_ts [B] likewise: the vision encoder runs once over all B
                    (one cu_seqlens segment per video) and its features fill each row's
                    <|video_pad|> slots in row-major order, i.e. each prompt gets its own video
    attention mask  none: plain causal attention

Why right padding and no mask: with causal attention a real token never sees a later pad, so the
real tokens of a right-padded prompt compute exactly what they compute alone, through the same
`is_causal` attention path; left padding would need a padding mask in the prefill (a different
attention kernel) and shift every real key to other slots. The prompt's last real state (at
length - 1) gives its first logits. In the decode cache, the pad slots L_b..Lmax-1 of a shorter
prompt hold garbage keys, so decode steps mask them (`slot_mask`); generated tokens of all rows
go to the same slots Lmax, Lmax+1, ... at rotary id next_position_b + step.

Batches (`plan_batches`) are consecutive runs of prompts, in order, of at most `batch_size`
prompts and at most `batch_tokens` padded prefill tokens (B x Lmax); a prompt longer than the
budget runs alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PromptBatch:
    """B prompts padded into one prefill (module docstring)."""

    input_ids: torch.Tensor         # [B, Lmax] long, right-padded with the pad id
    position_ids: torch.Tensor      # [3, B, Lmax] long
    lengths: list                   # B prompt lengths (real tokens)
    next_positions: torch.Tensor    # [B] long: rotary id of each prompt's first generated token
    pixel_values_videos: torch.Tensor | None  # the videos' patches, concatenated in batch order
    video_grid_thw: torch.Tensor | None       # [videos, 3]
    second_per_grid_ts: torch.Tensor | None   # [videos] (Qwen2.5-VL)

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    def forward_kwargs(self) -> dict:
        """kwargs for the model's prefill forward (None entries left out)."""
        out = {"input_ids": self.input_ids, "position_ids": self.position_ids}
        for name in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def _check_prompt(prompt, index: int, device) -> None:
    ids = getattr(prompt, "input_ids", None)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        raise ValueError(f"RolloutEngine: prompt {index}: input_ids must be a [1, L] tensor with L >= 1, got "
                         f"{None if not isinstance(ids, torch.Tensor) else tuple(ids.shape)}")
    if ids.device != device:
        raise ValueError(f"RolloutEngine: prompt {index} is on {ids.device}, the model on {device}; build the "
                         "prompt with device=vl.device or move it with prompt.to(...)")
    pos = getattr(prompt, "position_ids", None)
    if not isinstance(pos, torch.Tensor) or pos.shape != (3, 1, ids.shape[1]):
        raise ValueError(f"RolloutEngine: prompt {index}: position_ids must be [3, 1, {ids.shape[1]}], got "
                         f"{None if not isinstance(pos, torch.Tensor) else tuple(pos.shape)}")


def pad_prompts(prompts, pad_id: int, device) -> PromptBatch:
    """The B `PromptInputs` as one right-padded prefill batch (module docstring)."""
    if not prompts:
        raise ValueError("RolloutEngine: no prompts to batch")
    for i, prompt in enumerate(prompts):
        _check_prompt(prompt, i, device)
    lengths = [int(p.input_ids.shape[1]) for p in prompts]
    width, count = max(lengths), len(prompts)
    ids = torch.full((count, width), int(pad_id), dtype=torch.long, device=device)
    positions = torch.empty((3, count, width), dtype=torch.long, device=device)
    next_positions = torch.tensor([int(p.next_position) for p in prompts], dtype=torch.long, device=device)
    for b, (prompt, length) in enumerate(zip(prompts, lengths)):
        ids[b, :length] = prompt.input_ids[0]
        positions[:, b, :length] = prompt.position_ids[:, 0]
        if length < width:
            tail = next_positions[b] + torch.arange(width - length, device=device)
            positions[:, b, length:] = tail
    videos = [p for p in prompts if getattr(p, "pixel_values_videos", None) is not None]

    def cat(name):
        parts = [getattr(p, name) for p in videos if getattr(p, name, None) is not None]
        if not parts:
            return None
        if len(parts) != len(videos):
            raise ValueError(f"RolloutEngine: {name} is given for {len(parts)} of the {len(videos)} prompts "
                             "with a video; give it for all or none")
        return torch.cat(parts, dim=0)

    return PromptBatch(input_ids=ids, position_ids=positions, lengths=lengths, next_positions=next_positions,
                       pixel_values_videos=cat("pixel_values_videos"), video_grid_thw=cat("video_grid_thw"),
                       second_per_grid_ts=cat("second_per_grid_ts"))


def slot_mask(lengths: list, num_samples: int, width: int, capacity: int, device) -> torch.Tensor:
    """`[B * num_samples, capacity]` long decode mask: 1 on each row's prompt slots (0..L_b-1) and
    on every slot from `width` (= Lmax, where generated tokens go) on, 0 on the pad slots between.
    Slots not yet written are excluded by causality (the cache's write position), not by this mask."""
    length = torch.tensor(lengths, dtype=torch.long, device=device).repeat_interleave(num_samples)
    slots = torch.arange(capacity, device=device)
    return ((slots[None, :] < length[:, None]) | (slots[None, :] >= width)).long()


def plan_batches(lengths, batch_size: int, batch_tokens: int | None = None) -> list[list[int]]:
    """Consecutive index runs of at most `batch_size` prompts and `batch_tokens` padded tokens."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"plan_batches: batch_size must be an int >= 1, got {batch_size!r}")
    if batch_tokens is not None and (isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int)
                                     or batch_tokens < 1):
        raise ValueError(f"plan_batches: batch_tokens must be None or an int >= 1, got {batch_tokens!r}")
    batches, current, widest = [], [], 0
    for i, length in enumerate(lengths):
        wider = max(widest, int(length))
        fits = len(current) < batch_size and (batch_tokens is None or wider * (len(current) + 1) <= batch_tokens)
        if current and not fits:
            batches.append(current)
            current, wider = [], int(length)
        current.append(i)
        widest = wider
    if current:
        batches.append(current)
    return batches

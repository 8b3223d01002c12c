"""ETA (explicit timestamp alignment): the timestamped prompt layout and timestamp-driven 3-D
rotary position ids for Qwen2.5-VL / Qwen3-VL video inputs.

Prompt layout (both models; it is Qwen3-VL's native video layout). A video of `grid_t` temporal
patches, each `h x w` patches of the vision encoder (`video_grid_thw = [grid_t, h, w]`), becomes,
for every temporal patch j in order:

    <{tau_j:.1f} seconds><|vision_start|><|video_pad|> x (h/m)(w/m) <|vision_end|>

where m is the spatial merge size (2) and tau_j the patch's *slot time*: the mean of the pts of
its first and last frame, after padding the frame list to a multiple of temporal_patch_size by
repeating the last frame (as Qwen3-VL's processor and our `video_inputs` pad). Example: frames
at 0.0, 0.5, 2.0, 2.5 s and grid [2, 4, 6] give
`<0.2 seconds><|vision_start|>` + 6 pads + `<|vision_end|><2.2 seconds><|vision_start|>` + 6 pads
+ `<|vision_end|>`. The pixel inputs do not change: the vision encoder still sees one video of
grid [grid_t, h, w], and the model scatters its features into the pad tokens in order.

Position ids (`eta_position_ids`, Qwen2.5-VL's multimodal rotary index `[3, B, L]`: temporal,
height, width). Tokens are walked in order, `pos` being the next free position:
- a text run of n tokens gets pos, pos+1, ..., pos+n-1 on all three axes; pos += n;
- a run of video tokens covers whole temporal patches j0..j1 of one video (a run may not end
  inside a patch). When j0 is the video's first patch, the video's origin is o = pos. The
  temporal id of patch j is o + shift + d_j with the time offset
      d_j = floor((tau_j - tau_0) * tokens_per_second + 1e-6)
  (the 1e-6 absorbs float error of decoded timestamps, so an exact multiple lands on its integer);
  `shift` starts at 0 and becomes max(shift, pos - o - d_j0) at each run, so a patch is never
  placed before the text that precedes it (interleaved timestamp text pushes the video's time
  axis forward only when the time gap is too small to hold it). Height/width ids are
  pos + row, pos + column of the merged grid. After the run, pos = (largest id of the run) + 1
  (`after_vision="max"`, Qwen2-VL/Qwen2.5-VL's original rule and transformers <= 5.2, and the
  rule behind the `rope_deltas` that generation uses), or pos = run start + max(h, w)/m
  (`after_vision="spatial"`, transformers >= 5.3, which ignores the temporal extent).
For uniform sampling at f fps without interleaved text, d_j = floor(j * tokens_per_second * 2/f),
exactly transformers' `get_rope_index` with `second_per_grid_ts = 2/f` (transformers multiplies in
float32; at rates where that lands just under an integer, e.g. 0.16 s per patch, its id is one
lower than the exact one computed here). With tokens_per_second=0 every patch sits at the start of
its run: that is Qwen3-VL's index for its native layout.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
# Token ids shared by Qwen2-VL, Qwen2.5-VL and Qwen3-VL tokenizers.
VIDEO_TOKEN_ID = 151656

MODELS = ("qwen2_5_vl", "qwen3_vl")
# The system turn each model's chat template writes when the caller gives none.
DEFAULT_SYSTEM = {"qwen2_5_vl": "You are a helpful assistant.", "qwen3_vl": None}
AFTER_VISION = ("max", "spatial")
_FLOOR_GUARD = 1e-6


def _grid_rows(video_grid_thw, merge_size: int, where: str) -> list[tuple[int, int, int]]:
    """video_grid_thw as a list of (t, h, w) ints, validated."""
    grid = torch.as_tensor(video_grid_thw)
    if grid.dim() == 1:
        grid = grid.unsqueeze(0)
    if grid.dim() != 2 or grid.shape[1] != 3 or grid.is_floating_point():
        raise ValueError(f"{where}: video_grid_thw must be integers of shape [num_videos, 3] (t, h, w), "
                         f"got shape {tuple(grid.shape)} dtype {grid.dtype}")
    rows = [tuple(int(v) for v in row) for row in grid.tolist()]
    for i, (t, h, w) in enumerate(rows):
        if t < 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise ValueError(f"{where}: video_grid_thw[{i}] = {[t, h, w]} must be positive with h and w "
                             f"divisible by merge_size={merge_size}")
    return rows


def _check_pts(pts, where: str) -> torch.Tensor:
    pts = torch.as_tensor(pts, dtype=torch.float64).cpu()
    if pts.dim() != 1 or pts.numel() == 0:
        raise ValueError(f"{where}: pts must be a non-empty 1-D sequence of frame times in seconds, "
                         f"got shape {tuple(pts.shape)}")
    if not torch.isfinite(pts).all():
        raise ValueError(f"{where}: pts must be finite, got {pts.tolist()}")
    bad = torch.nonzero(pts[1:] < pts[:-1])
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{where}: pts must be sorted (non-decreasing), but pts[{i}]={pts[i].item()} > "
                         f"pts[{i + 1}]={pts[i + 1].item()}")
    return pts


def slot_times(pts, temporal_patch_size: int = 2) -> torch.Tensor:
    """Mean time (float64 seconds, `[ceil(T / temporal_patch_size)]`) of each temporal patch.

    `pts` are the frame times of the T frames fed to the vision encoder, sorted. The list is
    padded to a multiple of `temporal_patch_size` by repeating the last frame, and each slot's
    time is the mean of its first and last frame's time (Qwen3-VL's processor rule).
    """
    if temporal_patch_size < 1:
        raise ValueError(f"slot_times: temporal_patch_size must be >= 1, got {temporal_patch_size}")
    pts = _check_pts(pts, "slot_times")
    pad = -pts.numel() % temporal_patch_size
    pts = torch.cat([pts, pts[-1:].expand(pad)]).view(-1, temporal_patch_size)
    return (pts[:, 0] + pts[:, -1]) / 2


def format_timestamp(seconds: float) -> str:
    """`<12.5 seconds>`: the text timestamp before a temporal patch (one decimal)."""
    return f"<{seconds:.1f} seconds>"


def _video_slot_times(pts, grid_t: int, temporal_patch_size: int, where: str) -> torch.Tensor:
    times = slot_times(pts, temporal_patch_size)
    if times.numel() != grid_t:
        raise ValueError(f"{where}: {len(pts)} frame times make {times.numel()} temporal patches of "
                         f"{temporal_patch_size} frames, but video_grid_thw says grid_t={grid_t}")
    return times


def eta_video_text(pts, video_grid_thw, *, temporal_patch_size: int = 2, merge_size: int = 2,
                   expand: bool = True) -> str:
    """The ETA text of one video: per temporal patch, its timestamp then its vision tokens.

    `expand=False` writes one `<|video_pad|>` per temporal patch instead of (h/m)(w/m); turn it
    into input ids with `eta_input_ids`, which expands the ids (much faster than tokenizing
    thousands of pad tokens).
    """
    rows = _grid_rows(video_grid_thw, merge_size, "eta_video_text")
    if len(rows) != 1:
        raise ValueError(f"eta_video_text: expects the grid of one video, got {len(rows)} rows")
    grid_t, h, w = rows[0]
    times = _video_slot_times(pts, grid_t, temporal_patch_size, "eta_video_text")
    pads = VIDEO_PAD * ((h // merge_size) * (w // merge_size) if expand else 1)
    return "".join(f"{format_timestamp(t)}{VISION_START}{pads}{VISION_END}" for t in times.tolist())


def eta_prompt(pts, video_grid_thw, question: str = "", *, model: str = "qwen2_5_vl",
               system: str | None = None, temporal_patch_size: int = 2, merge_size: int = 2,
               expand: bool = True, add_generation_prompt: bool = True) -> str:
    """The chat text of one user turn holding an ETA video followed by `question`.

    Layout (the models' chat template with the video replaced by its ETA text):
        <|im_start|>system\\n{system}<|im_end|>\\n          (omitted when there is no system text)
        <|im_start|>user\\n{eta_video_text}{question}<|im_end|>\\n
        <|im_start|>assistant\\n                           (when add_generation_prompt)
    `system=None` takes the model's default: Qwen2.5-VL's "You are a helpful assistant.",
    none for Qwen3-VL.
    """
    if model not in MODELS:
        raise ValueError(f"eta_prompt: model must be one of {MODELS}, got {model!r}")
    system = DEFAULT_SYSTEM[model] if system is None else system
    video = eta_video_text(pts, video_grid_thw, temporal_patch_size=temporal_patch_size,
                           merge_size=merge_size, expand=expand)
    parts = []
    if system:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    parts.append(f"<|im_start|>user\n{video}{question}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def eta_input_ids(text: str, tokenizer, video_grid_thw, *, merge_size: int = 2,
                  video_token: str = VIDEO_PAD) -> torch.Tensor:
    """Token ids `[1, L]` of an ETA prompt, with every temporal patch's pads at full length.

    `text` may carry (h/m)(w/m) pads per temporal patch (`expand=True`) or one (`expand=False`,
    expanded here); videos in `video_grid_thw` are in prompt order.
    """
    rows = _grid_rows(video_grid_thw, merge_size, "eta_input_ids")
    video_id = tokenizer.convert_tokens_to_ids(video_token)
    if video_id is None or video_id == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"eta_input_ids: the tokenizer has no {video_token!r} token")
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    per_patch = torch.tensor([(h // merge_size) * (w // merge_size) for t, h, w in rows for _ in range(t)])
    n_pads = int((ids == video_id).sum())
    if n_pads == int(per_patch.sum()):
        return ids.unsqueeze(0)
    if n_pads != per_patch.numel():
        raise ValueError(f"eta_input_ids: the text has {n_pads} {video_token} tokens; video_grid_thw "
                         f"{[list(r) for r in rows]} needs {int(per_patch.sum())} (or {per_patch.numel()}, "
                         "one per temporal patch, to expand)")
    repeats = torch.ones_like(ids)
    repeats[ids == video_id] = per_patch
    return ids.repeat_interleave(repeats).unsqueeze(0)


def _time_offsets(rows, timestamps, second_per_grid_ts, tokens_per_second, temporal_patch_size):
    """Per video, the temporal offsets d_j (list of ints) of its temporal patches."""
    if timestamps is not None and second_per_grid_ts is not None:
        raise ValueError("eta_position_ids: pass timestamps or second_per_grid_ts, not both")
    if timestamps is not None:
        one_video = timestamps.dim() == 1 if isinstance(timestamps, torch.Tensor) else (
            isinstance(timestamps, Sequence) and len(timestamps) > 0 and isinstance(timestamps[0], numbers.Real))
        if one_video:
            timestamps = [timestamps]
        if len(timestamps) != len(rows):
            raise ValueError(f"eta_position_ids: got timestamps for {len(timestamps)} videos, "
                             f"video_grid_thw has {len(rows)}")
        times = [_video_slot_times(pts, t, temporal_patch_size, f"eta_position_ids (video {v})")
                 for v, (pts, (t, _, _)) in enumerate(zip(timestamps, rows))]
    else:
        spg = [1.0] * len(rows) if second_per_grid_ts is None else \
            torch.as_tensor(second_per_grid_ts, dtype=torch.float64).reshape(-1).tolist()
        if len(spg) != len(rows):
            raise ValueError(f"eta_position_ids: second_per_grid_ts has {len(spg)} values, "
                             f"video_grid_thw has {len(rows)} videos")
        times = [torch.arange(t, dtype=torch.float64) * s for s, (t, _, _) in zip(spg, rows)]
    return [torch.floor((tau - tau[0]) * tokens_per_second + _FLOOR_GUARD).long().tolist() for tau in times]


def eta_position_ids(input_ids: torch.Tensor, video_grid_thw, timestamps=None, *,
                     tokens_per_second: float = 2, spatial_merge_size: int = 2,
                     temporal_patch_size: int = 2, second_per_grid_ts=None,
                     attention_mask: torch.Tensor | None = None, video_token_id: int = VIDEO_TOKEN_ID,
                     after_vision: str = "max") -> torch.Tensor:
    """3-D rotary position ids `[3, B, L]` (temporal, height, width) from the videos' real times.

    input_ids: `[B, L]` (or `[L]`) token ids; video tokens are `video_token_id`, in whole temporal
        patches, videos in the order of `video_grid_thw` (`[num_videos, 3]`) across the batch.
    timestamps: one 1-D sequence of frame pts (seconds) per video (or one sequence for a single
        video), the T frames given to the vision encoder, ceil(T / temporal_patch_size) == grid_t.
        None: uniform, patch j at j * second_per_grid_ts seconds (1.0 when that is None too).
    attention_mask: `[B, L]`, positions where it is 0 are skipped and get id 0 (as transformers).
    after_vision: "max" or "spatial", where text after a video run continues (module docstring).
    Returns int64 on input_ids' device. The layout is documented in the module docstring.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point():
        raise TypeError(f"eta_position_ids: input_ids must be an integer torch.Tensor, got "
                        f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if after_vision not in AFTER_VISION:
        raise ValueError(f"eta_position_ids: after_vision must be one of {AFTER_VISION}, got {after_vision!r}")
    if tokens_per_second < 0 or not math.isfinite(tokens_per_second):
        raise ValueError(f"eta_position_ids: tokens_per_second must be finite and >= 0, got {tokens_per_second}")
    ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2:
        raise ValueError(f"eta_position_ids: input_ids must be [B, L] or [L], got shape {tuple(input_ids.shape)}")
    mask = None
    if attention_mask is not None:
        mask = attention_mask.unsqueeze(0) if attention_mask.dim() == 1 else attention_mask
        if mask.shape != ids.shape:
            raise ValueError(f"eta_position_ids: attention_mask shape {tuple(attention_mask.shape)} does not "
                             f"match input_ids shape {tuple(input_ids.shape)}")
        mask = mask.bool().cpu()
    m = spatial_merge_size
    rows = _grid_rows(video_grid_thw, m, "eta_position_ids")
    offsets = _time_offsets(rows, timestamps, second_per_grid_ts, tokens_per_second, temporal_patch_size)
    need = sum(t * (h // m) * (w // m) for t, h, w in rows)
    valid_ids = ids.cpu() if mask is None else ids.cpu()[mask]
    have = int((valid_ids == video_token_id).sum())
    if have != need:
        raise ValueError(f"eta_position_ids: input_ids hold {have} video tokens (id {video_token_id}), "
                         f"video_grid_thw {[list(r) for r in rows]} needs {need}")

    out = torch.zeros(3, *ids.shape, dtype=torch.long)
    state = {"video": 0, "patch": 0, "origin": 0, "shift": 0}
    for b in range(ids.shape[0]):
        row = ids[b].cpu() if mask is None else ids[b].cpu()[mask[b]]
        pos_b = _row_positions(row, rows, offsets, state, video_token_id, m, after_vision)
        if mask is None:
            out[:, b] = pos_b
        else:
            out[:, b, mask[b]] = pos_b
        if state["patch"]:
            raise ValueError(f"eta_position_ids: video {state['video']} is split across batch rows "
                             f"{b} and {b + 1}; each video must lie within one row")
    return out.to(input_ids.device)


def _row_positions(row, rows, offsets, state, video_token_id, m, after_vision) -> torch.Tensor:
    """Position ids `[3, n]` of one sequence; `state` carries the current video and patch."""
    n = row.numel()
    out = torch.empty(3, n, dtype=torch.long)
    if n == 0:
        return out
    is_video = row == video_token_id
    bounds = [0] + (torch.nonzero(is_video[1:] != is_video[:-1]).flatten() + 1).tolist() + [n]
    pos = 0
    for start, end in zip(bounds[:-1], bounds[1:]):
        if not bool(is_video[start]):
            out[:, start:end] = torch.arange(pos, pos + end - start)
            pos += end - start
            continue
        k = start
        while k < end:  # one video at a time: a run may run from one video into the next
            v, j0 = state["video"], state["patch"]
            grid_t, h, w = rows[v]
            hh, ww = h // m, w // m
            per_patch = hh * ww
            take = min(end - k, (grid_t - j0) * per_patch)
            if take % per_patch:
                raise ValueError(f"eta_position_ids: a run of video tokens ends inside temporal patch "
                                 f"{j0 + take // per_patch} of video {v} ({take % per_patch} of {per_patch} "
                                 "tokens); runs must hold whole temporal patches")
            n_patch = take // per_patch
            if j0 == 0:
                state["origin"], state["shift"] = pos, 0
            d = torch.tensor(offsets[v][j0:j0 + n_patch])
            state["shift"] = max(state["shift"], pos - state["origin"] - int(d[0]))
            t_ids = (state["origin"] + state["shift"] + d).repeat_interleave(per_patch)
            h_ids = (pos + torch.arange(hh)).repeat_interleave(ww).repeat(n_patch)
            w_ids = (pos + torch.arange(ww)).repeat(hh * n_patch)
            out[0, k:k + take], out[1, k:k + take], out[2, k:k + take] = t_ids, h_ids, w_ids
            if after_vision == "max":
                pos = max(int(t_ids[-1]), pos + max(hh, ww) - 1) + 1
            else:
                pos = pos + max(hh, ww)
            state["patch"] = j0 + n_patch
            if state["patch"] == grid_t:
                state["video"], state["patch"] = v + 1, 0
            k += take
    return out


def rope_deltas(position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`[B, 1]`: max position id + 1 - number of tokens, per row, the offset generation adds to the
    cache position of each new token (transformers' `rope_deltas`)."""
    if position_ids.dim() != 3 or position_ids.shape[0] != 3:
        raise ValueError(f"rope_deltas: position_ids must be [3, B, L], got shape {tuple(position_ids.shape)}")
    if attention_mask is None:
        lengths = torch.full((position_ids.shape[1],), position_ids.shape[2], device=position_ids.device)
        top = position_ids.amax(dim=(0, 2))
    else:
        keep = attention_mask.bool().to(position_ids.device)
        lengths = keep.sum(-1)
        top = position_ids.masked_fill(~keep, torch.iinfo(position_ids.dtype).min).amax(dim=(0, 2))
    return (top + 1 - lengths).unsqueeze(1)

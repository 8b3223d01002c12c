"""Pretraining data: the synthetic clips rendered, decoded and resized once, and tasks turned into
model inputs in the grounding prompt's layout.

- `prepare_clips(root, synth, num_frames, frame_size)`: renders the synthetic set (`generate_synthetic`,
  resumable) into `root`, decodes `num_frames` uniformly spaced frames of every clip and resizes them
  to `frame_size` x `frame_size` (Qwen's antialiased bicubic, rounded to uint8: exactly what
  `video_inputs` feeds the model) ONCE, cached in `root/frames_{num_frames}x{frame_size}.pt`. A
  `Clips` holds the plans, the uint8 frames [N, T, C, S, S] and pts [N, T].
- `encode(vl, clips, i, task)`: one `Example` (prompt ids and rotary ids, answer ids, the clip index
  or None): with the video, the prompt is `tempo_fast.video.eta.eta_prompt` (system turn, the ETA
  video block, then the question), as `build_prompt` writes grounding prompts; without, the same
  chat turns with the question alone.
- `follow_ups(vl, example, tasks)`: more question/answer turns about the same clip after the first
  answer (the first question sits where the grounding query does);
- `collate(vl, clips, examples)`: right-padded batch, answer labels, the videos' pixel inputs
  (normalised from the cached uint8 frames: no resize, a few ms per batch).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tempo_fast.video.eta import eta_input_ids, eta_position_ids, eta_prompt


@dataclass
class Clips:
    """Decoded, resized clips and their plans (facts)."""

    plans: list            # plan dicts (tempo_fast.data.synthetic facts), clip order
    frames: torch.Tensor   # uint8 [N, T, C, S, S]
    pts: torch.Tensor      # float64 [N, T] seconds

    def __len__(self) -> int:
        return len(self.plans)

    def split(self, names) -> list[int]:
        """Indices of the clips whose plan split is in `names`."""
        return [i for i, p in enumerate(self.plans) if p["split"] in names]


@dataclass
class Example:
    """One encoded task."""

    input_ids: torch.Tensor     # [L] long: the prompt
    position_ids: torch.Tensor  # [3, L] long
    answer: torch.Tensor        # [A] long: answer tokens then <|im_end|>
    clip: int | None            # clip index when the video is in the prompt
    kind: str = ""              # task kind (for metrics)
    label: int = -1             # 1 / 0 for yes / no answers, else -1
    more_ids: torch.Tensor | None = None     # [M] follow-up turns after the first answer (questions + answers)
    more_labels: torch.Tensor | None = None  # [M] the follow-up answer tokens at their places, -1 elsewhere


def _decode_clip(path, num_frames: int, frame_size: int):
    from tempo_fast.video import decode
    from tempo_fast.video.decode import probe as video_info
    from tempo_fast.video.saa import uniform_times

    times = uniform_times(video_info(path).duration, num_frames)
    frames = decode(path, timestamps=times)
    x = frames.data.float()
    if tuple(x.shape[-2:]) != (frame_size, frame_size):  # as video_inputs resizes (quantize=True)
        x = F.interpolate(x, size=(frame_size, frame_size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255).round_().to(torch.uint8), times


def prepare_clips(root, synth, *, num_frames: int = 16, frame_size: int = 84, progress: bool = False) -> Clips:
    """Render (if needed), decode and resize the clips of `synth` (a SynthConfig) under `root`, cached."""
    from tempo_fast.data.synthetic import generate_synthetic, load_facts, video_id

    root = Path(root)
    cache = root / f"frames_{num_frames}x{frame_size}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved["num_videos"] == synth.num_videos and saved["content"] == synth.content_fields():
            return Clips(saved["plans"], saved["frames"], saved["pts"])
    generate_synthetic(root, synth, progress=progress)
    facts = load_facts(root)
    plans = [facts[video_id(synth.seed, i)] for i in range(synth.num_videos)]
    frames = torch.empty(len(plans), num_frames, 3, frame_size, frame_size, dtype=torch.uint8)
    pts = torch.empty(len(plans), num_frames, dtype=torch.float64)
    for i, plan in enumerate(plans):
        frames[i], pts[i] = _decode_clip(root / "videos" / f"{plan['vid']}.mp4", num_frames, frame_size)
    tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
    torch.save({"num_videos": synth.num_videos, "content": synth.content_fields(), "plans": plans,
                "frames": frames, "pts": pts}, tmp)
    os.replace(tmp, cache)
    return Clips(plans, frames, pts)


def _grid(vl, frame_size: int, num_frames: int) -> torch.Tensor:
    p, tp = int(vl.vision.patch_size), int(vl.vision.temporal_patch_size)
    return torch.tensor([[-(-num_frames // tp), frame_size // p, frame_size // p]])


def _answer_ids(vl, text: str) -> torch.Tensor:
    from tempo_fast.pretrain.tasks import answer_text

    ids = vl.tokenizer(answer_text(text), add_special_tokens=False)["input_ids"]
    return torch.tensor(list(ids) + [vl.tokenizer.convert_tokens_to_ids("<|im_end|>")], dtype=torch.long)


def _video_prefix(vl, clips: Clips, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [P], rotary ids [3, P]) of the chat turns up to the end of clip `index`'s ETA video block,
    cached on the Clips (the same for every question about the clip)."""
    cache = clips.__dict__.setdefault("_prefix", {})
    if index not in cache:
        merge, tp = int(vl.vision.spatial_merge_size), int(vl.vision.temporal_patch_size)
        pts = clips.pts[index]
        grid = _grid(vl, clips.frames.shape[-1], clips.frames.shape[1])
        text = eta_prompt(pts, grid, "", model=vl.family, temporal_patch_size=tp, merge_size=merge, expand=False,
                          add_generation_prompt=False)
        text = text[:text.rindex("<|im_end|>")]  # up to the end of the video: the question goes here
        ids = eta_input_ids(text, vl.tokenizer, grid, merge_size=merge)
        pos = eta_position_ids(ids, grid, pts, tokens_per_second=vl.tokens_per_second, spatial_merge_size=merge,
                               temporal_patch_size=tp, video_token_id=vl.video_token_id, after_vision="max")
        cache[index] = (ids[0], pos[:, 0])
    return cache[index]


def encode(vl, clips: Clips, index: int, task) -> Example:
    """The model inputs of `task` about clip `index` (see the module docstring). With the video,
    the ids and rotary ids are exactly those of `eta_prompt` + `eta_position_ids` on the whole
    text (the question after the video continues at the video's max id + 1, the "max" rule)."""
    from tempo_fast.pretrain.tasks import NO, YES

    label = 1 if task.answer == YES else 0 if task.answer == NO else -1
    answer = _answer_ids(vl, task.answer)
    if task.video:
        prefix, prefix_pos = _video_prefix(vl, clips, index)
        tail = f"{task.question}<|im_end|>\n<|im_start|>assistant\n"
        tail_ids = torch.tensor(vl.tokenizer(tail, add_special_tokens=False)["input_ids"], dtype=torch.long)
        tail_pos = (int(prefix_pos.max()) + 1 + torch.arange(len(tail_ids))).expand(3, -1)
        return Example(torch.cat([prefix, tail_ids]), torch.cat([prefix_pos, tail_pos], dim=1), answer, index,
                       task.kind, label)
    ids = torch.tensor(vl.tokenizer(_text_prompt(vl, task.question), add_special_tokens=False)["input_ids"],
                       dtype=torch.long)
    return Example(ids, torch.arange(len(ids)).expand(3, -1), answer, None, task.kind, label)


def follow_ups(vl, example: Example, tasks) -> Example:
    """`example` with further chat turns about the same clip appended (one user question and its
    answer each): more supervision per (costly) video prompt."""
    newline = vl.tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids, is_answer = list(newline), [False] * len(newline)
    for task in tasks:
        q = vl.tokenizer(f"<|im_start|>user\n{task.question}<|im_end|>\n<|im_start|>assistant\n",
                         add_special_tokens=False)["input_ids"]
        a = _answer_ids(vl, task.answer).tolist()
        ids += list(q) + a + list(newline)
        is_answer += [False] * len(q) + [True] * len(a) + [False] * len(newline)
    more = torch.tensor(ids, dtype=torch.long)
    labels = torch.where(torch.tensor(is_answer), more, torch.full_like(more, -1))
    return Example(example.input_ids, example.position_ids, example.answer, example.clip, example.kind,
                   example.label, more, labels)


def _text_prompt(vl, question: str) -> str:
    from tempo_fast.video.eta import DEFAULT_SYSTEM

    system = DEFAULT_SYSTEM[vl.family]
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{head}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def pixel_inputs(vl, clips: Clips, indices: list[int]) -> dict:
    """pixel_values_videos / video_grid_thw / second_per_grid_ts of clips `indices`, in order."""
    from tempo_fast.video.preprocess import video_inputs

    size = clips.frames.shape[-1]
    parts = [video_inputs(clips.frames[i], pts=clips.pts[i], size=(size, size),
                          temporal_patch_size=int(vl.vision.temporal_patch_size),
                          patch_size=int(vl.vision.patch_size), merge_size=int(vl.vision.spatial_merge_size),
                          mean=vl.image_mean, std=vl.image_std, dtype=vl.dtype) for i in indices]
    return {"pixel_values_videos": torch.cat([p["pixel_values_videos"] for p in parts]),
            "video_grid_thw": torch.cat([p["video_grid_thw"] for p in parts]),
            "second_per_grid_ts": torch.cat([p["second_per_grid_ts"] for p in parts])}


def collate(vl, clips: Clips, examples: list[Example]) -> dict:
    """Right-padded batch: input_ids / attention_mask [B, L], position_ids [3, B, L], labels [B, L]
    (at t the answer token at t+1, -1 elsewhere), `first` [B] (position predicting the first
    answer token) and the videos' pixel inputs when any example has a clip."""
    if not examples:
        raise ValueError("collate: empty batch")
    lengths = [len(e.input_ids) + len(e.answer) + (0 if e.more_ids is None else len(e.more_ids)) for e in examples]
    b, length = len(examples), max(lengths)
    input_ids = torch.full((b, length), vl.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((b, length), dtype=torch.long)
    position_ids = torch.zeros((3, b, length), dtype=torch.long)
    labels = torch.full((b, length), -1, dtype=torch.long)
    first = torch.empty(b, dtype=torch.long)
    for row, e in enumerate(examples):
        n, a = len(e.input_ids), len(e.answer)
        m = 0 if e.more_ids is None else len(e.more_ids)
        input_ids[row, :n + a] = torch.cat([e.input_ids, e.answer])
        attention_mask[row, :n + a + m] = 1
        nxt = int(e.position_ids.max()) + 1
        position_ids[:, row, :n] = e.position_ids
        position_ids[:, row, n:n + a + m] = (nxt + torch.arange(a + m)).expand(3, a + m)
        labels[row, n - 1:n + a - 1] = e.answer
        if m:  # the token before each follow-up answer token predicts it
            input_ids[row, n + a:n + a + m] = e.more_ids
            labels[row, n + a - 1:n + a + m - 1] = e.more_labels
        first[row] = n - 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
             "labels": labels, "first": first}
    with_video = [e.clip for e in examples if e.clip is not None]
    if with_video:
        batch.update(pixel_inputs(vl, clips, with_video))
    return batch

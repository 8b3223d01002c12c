"""Dense vision supervision for pretraining: what each video token shows, from the clip's plan.

A tiny vision tower trained only through the language loss learns colours slowly and shapes hardly
at all (shipped v1: held-out shape accuracy 0.16, below chance), and without them the LM cannot
compare a query with the clip. Here every merged video token (a temporal patch of 2 frames times a
28 x 28-pixel cell of the model's frame) gets labels from the plan - the colour, shape and size of
the object covering most of the cell, and the action that object is doing then ("still" when none;
every label "none" for an empty cell) - and a linear head on the vision tower's output (the
embeddings the LM reads) is trained on them beside the language loss. The head is thrown away:
the shipped model is a plain Qwen2.5-VL checkpoint. The labels are computed with the renderer's
own shape masks at the plan's resolution, so they are exact up to the resize and the shake
distractor (a few pixels).
"""
from __future__ import annotations

import numpy as np
import torch

from tempo_fast.data.synthetic import COLOURS, SHAPES, SIZES
from tempo_fast.data.synthetic.plan import object_state
from tempo_fast.data.synthetic.render import _shape_mask

NONE = "none"
FIELDS = {  # label field -> its classes (index 0: no object)
    "colour": (NONE,) + tuple(COLOURS),
    "shape": (NONE,) + tuple(SHAPES),
    "size": (NONE,) + tuple(SIZES),
    "action": (NONE, "still", "appear", "disappear", "move", "change"),
}
NUM_OUTPUTS = sum(len(v) for v in FIELDS.values())
MIN_PIXELS = 6  # an object covering fewer plan pixels of a cell (over its frames) leaves it "none"
_RGB = np.array(list(COLOURS.values()), dtype=np.float64)


def _colour_name(rgb: np.ndarray) -> str:
    return list(COLOURS)[int(np.argmin(((_RGB - rgb) ** 2).sum(1)))]


def _action_at(obj: dict, k: int) -> str:
    for step in obj["track"]["steps"]:
        if step["k0"] <= k <= step["k1"]:
            return step["action"]
    return "still"


def dense_labels(plan: dict, pts, frame_size: int, *, patch_size: int = 14, merge_size: int = 2,
                 temporal_patch_size: int = 2) -> torch.Tensor:
    """Long [T', G, G, 4] labels (colour, shape, size, action class indices of FIELDS) of the
    merged video tokens of one clip sampled at `pts` (seconds) and resized to `frame_size`
    square, in the vision tower's output order (time, row, column)."""
    pts = np.asarray(pts, dtype=np.float64)
    cell = patch_size * merge_size
    if frame_size % cell:
        raise ValueError(f"dense_labels: frame_size {frame_size} is not a multiple of {cell}")
    g, tp = frame_size // cell, temporal_patch_size
    t_out = -(-len(pts) // tp)
    w, h = plan["width"], plan["height"]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # plan pixel -> cell index (cell edges mapped from the model's frame to the plan's)
    cx = np.minimum((xs + 0.5) * g / w, g - 1e-6).astype(int)
    cy = np.minimum((ys + 0.5) * g / h, g - 1e-6).astype(int)
    cell_of = cy * g + cx
    out = np.zeros((t_out, g * g, 4), dtype=np.int64)
    for t in range(t_out):
        frames = [min(round(float(p) * plan["fps"]), plan["num_frames"] - 1) for p in pts[t * tp:(t + 1) * tp]]
        counts = np.zeros((len(plan["objects"]), g * g), dtype=np.int64)
        info = {}
        for o, obj in enumerate(plan["objects"]):
            for k in frames:
                x, y, scale, rgb = object_state(obj, k)
                r = obj["radius"] * scale
                if r < 0.5:
                    continue
                mask = _shape_mask(obj["shape"], xs - x, ys - y, r)
                counts[o] += np.bincount(cell_of[mask], minlength=g * g)
                info.setdefault(o, (_colour_name(rgb), _action_at(obj, k)))
        if not len(plan["objects"]):
            continue
        best = counts.argmax(0)
        for c in range(g * g):
            o = int(best[c])
            if counts[o, c] < MIN_PIXELS or o not in info:
                continue
            obj, (colour, action) = plan["objects"][o], info[o]
            out[t, c] = (FIELDS["colour"].index(colour), FIELDS["shape"].index(obj["shape"]),
                         FIELDS["size"].index(obj["size"]), FIELDS["action"].index(action))
    return torch.from_numpy(out.reshape(t_out, g, g, 4))


class DenseHead(torch.nn.Module):
    """Linear read-out of the dense labels from vision-token embeddings [N, D] -> logits per field."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = torch.nn.Linear(dim, NUM_OUTPUTS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.proj(x.float()).split([len(v) for v in FIELDS.values()], dim=-1))

    def loss(self, embeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over tokens of the summed field cross-entropies; labels [N, 4]."""
        return sum(torch.nn.functional.cross_entropy(logits, labels[:, f])
                   for f, logits in enumerate(self(embeds)))

    @torch.no_grad()
    def accuracy(self, embeds: torch.Tensor, labels: torch.Tensor) -> dict:
        """Per-field accuracy on the tokens that show an object (label colour != none)."""
        keep = labels[:, 0] > 0
        if not bool(keep.any()):
            return {}
        return {f"dense_{name}_acc": float((logits[keep].argmax(-1) == labels[keep, f]).double().mean())
                for f, (name, logits) in enumerate(zip(FIELDS, self(embeds)))}


def clip_labels(clips, index: int, vl) -> torch.Tensor:
    """dense_labels of clip `index` of a pretraining Clips, flattened [T' * G * G, 4], cached."""
    cache = clips.__dict__.setdefault("_dense", {})
    if index not in cache:
        cache[index] = dense_labels(clips.plans[index], clips.pts[index].numpy(), clips.frames.shape[-1],
                                    patch_size=int(vl.vision.patch_size),
                                    merge_size=int(vl.vision.spatial_merge_size),
                                    temporal_patch_size=int(vl.vision.temporal_patch_size)).reshape(-1, 4)
    return cache[index]


class VisionTap:
    """Keeps the vision tower's last output embeddings (`pooler_output`, token order restored)."""

    def __init__(self, visual: torch.nn.Module):
        self.embeds = None
        self._handle = visual.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.embeds = output.pooler_output if hasattr(output, "pooler_output") else output

    def take(self) -> torch.Tensor | None:
        embeds, self.embeds = self.embeds, None
        return embeds

    def close(self) -> None:
        self._handle.remove()

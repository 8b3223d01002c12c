"""tempo_fast.pretrain.dense: the per-token labels agree with the rendered pixels, follow the
vision tower's token order, and the head learns them (the shipped
weights hold the model alone: tests/test_pretrain.py compares their keys with the model's)."""
import numpy as np
import pytest
import torch

from tempo_fast.data.synthetic import COLOURS, SynthConfig, plan_video
from tempo_fast.data.synthetic.render import render_frames
from tempo_fast.pretrain.dense import FIELDS, MIN_PIXELS, DenseHead, dense_labels

def _plans(n=12, seed=11):
    cfg = SynthConfig(num_videos=n, seed=seed, min_seconds=3, max_seconds=6, min_objects=1, max_objects=3,
                      events_per_object=2, shake_prob=0.0, brightness_prob=0.0, cut_prob=0.0)
    return [plan_video(cfg, i) for i in range(n)]


def _cell_pixels(frame, i, j, g):
    h, w = frame.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    inside = (np.minimum((ys + 0.5) * g / h, g - 1e-6).astype(int) == i) & \
             (np.minimum((xs + 0.5) * g / w, g - 1e-6).astype(int) == j)
    return frame[inside].astype(np.int64)


@pytest.mark.parametrize("frame_size,num_frames", [(84, 16), (56, 5), (112, 8)])
def test_labels_agree_with_the_rendered_pixels(frame_size, num_frames):
    """A labelled cell holds >= MIN_PIXELS pixels of the labelled colour in its frames; a "none"
    cell holds fewer than MIN_PIXELS of any object's exact colour (backgrounds are dark and grey)."""
    checked = 0
    for plan in _plans():
        frames = render_frames(plan)
        pts = np.linspace(0, (plan["num_frames"] - 1) / plan["fps"], num_frames)
        lab = dense_labels(plan, pts, frame_size)
        g = frame_size // 28
        assert lab.shape == (-(-num_frames // 2), g, g, 4) and lab.dtype == torch.long
        for t in range(lab.shape[0]):
            ks = [min(round(p * plan["fps"]), plan["num_frames"] - 1) for p in pts[2 * t:2 * t + 2]]
            for i in range(g):
                for j in range(g):
                    pix = np.concatenate([_cell_pixels(frames[k], i, j, g) for k in ks])
                    colour, shape, size, action = lab[t, i, j].tolist()
                    if colour == 0:
                        assert shape == size == action == 0
                        for rgb in COLOURS.values():
                            assert int((pix == np.array(rgb)).all(1).sum()) < MIN_PIXELS + 4
                        continue
                    assert shape > 0 and size > 0 and action > 0
                    name = FIELDS["colour"][colour]
                    present = [o for o in plan["objects"] if o["shape"] == FIELDS["shape"][shape]]
                    assert present, (plan["vid"], t, i, j)
                    if FIELDS["action"][action] == "change":  # mid-change pixels are a blend
                        continue
                    near = (np.abs(pix - np.array(COLOURS[name])).sum(1) <= 30).sum()
                    assert near >= 1, (plan["vid"], t, i, j, name)
                    checked += 1
    assert checked > 50


def test_actions_follow_the_schedule():
    plan = next(p for p in _plans(40) if any(s["action"] == "move" for o in p["objects"] for s in o["track"]["steps"]))
    obj = next(o for o in plan["objects"] if any(s["action"] == "move" for s in o["track"]["steps"]))
    step = next(s for s in obj["track"]["steps"] if s["action"] == "move")
    k = (step["k0"] + step["k1"]) // 2
    pts = np.array([k, k], dtype=np.float64) / plan["fps"]
    lab = dense_labels(plan, pts, 84)[0].reshape(-1, 4)
    shapes = lab[:, 1].tolist()
    mine = [r for r, s in zip(lab.tolist(), shapes) if s and FIELDS["shape"][s] == obj["shape"]]
    assert mine and all(FIELDS["action"][r[3]] == "move" for r in mine)


def test_bad_frame_size_names_it():
    with pytest.raises(ValueError, match="frame_size 90"):
        dense_labels(_plans(1)[0], [0.0, 0.1], 90)


def test_head_learns_separable_labels_and_reports_accuracy():
    torch.manual_seed(0)
    labels = torch.stack([torch.randint(0, len(v), (256,)) for v in FIELDS.values()], 1)
    labels[:, 0] = torch.randint(1, len(FIELDS["colour"]), (256,))
    codes = torch.cat([torch.nn.functional.one_hot(labels[:, f], len(v)) for f, v in enumerate(FIELDS.values())], 1)
    embeds = codes.float() @ torch.randn(codes.shape[1], 32)
    head = DenseHead(32)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = float(head.loss(embeds, labels).detach())
    for _ in range(200):
        opt.zero_grad()
        head.loss(embeds, labels).backward()
        opt.step()
    assert float(head.loss(embeds, labels).detach()) < 0.1 * first
    acc = head.accuracy(embeds, labels)
    assert set(acc) == {f"dense_{f}_acc" for f in FIELDS} and min(acc.values()) > 0.95

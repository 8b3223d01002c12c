"""Held-out evaluation of pretraining: yes/no accuracy and AUC, caption and attribute accuracy.

`eval_examples(vl, clips, indices, seed)` draws a fixed set of tasks about held-out clips:
- "event" / "exists": yes/no questions with the video alone (balanced), the figures that count;
- "event_text": event questions with the clip written as text and no video (curriculum stage 1);
- "event_evidence": event questions with the text evidence beside the video (stage 2);
- "caption", "colour", "shape": from the video alone.
`evaluate(vl, clips, examples)` scores them teacher-forced in batches: a yes/no decision is
log p(yes) - log p(no) at the decision token (the first where "<answer>yes</answer>" and
"<answer>no</answer>" differ; accuracy at 0 and the AUC of that score); captions: the share of
answer tokens predicted right (argmax given the true prefix) and of captions entirely right;
colour / shape: every answer token right.
"""
from __future__ import annotations

import random

import torch

from tempo_fast.pretrain.data import collate, encode
from tempo_fast.pretrain.tasks import make_task

# (metric group, task kind, with video, with text evidence, how many per 100 held-out clips)
EVAL_SETS = (("event", "event", True, False, 100), ("exists", "exists", True, False, 100),
             ("event_text", "event", False, True, 50), ("event_evidence", "event", True, True, 50),
             ("caption", "caption", True, False, 25), ("colour", "colour", True, False, 25),
             ("shape", "shape", True, False, 25))


def eval_examples(vl, clips, indices: list[int], seed: int = 0) -> list[tuple[str, object]]:
    """[(group, Example)] of the fixed held-out tasks (deterministic in `seed` and `indices`)."""
    rng = random.Random(seed)
    out = []
    for group, kind, video, evidence, per_100 in EVAL_SETS:
        n, tries = max(1, round(per_100 * len(indices) / 100)), 0
        made = 0
        while made < n and tries < 20 * n:
            tries += 1
            i = rng.choice(indices)
            task = make_task(clips.plans[i], kind, rng, video=video, evidence=evidence)
            if task is not None:
                out.append((group, encode(vl, clips, i, task)))
                made += 1
    return out


def auc(scores: list[float], labels: list[int]) -> float:
    """Area under the ROC curve of `scores` for labels 1 vs 0 (ties count half); NaN without both."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return float("nan")
    s = torch.tensor(pos, dtype=torch.float64)[:, None]
    t = torch.tensor(neg, dtype=torch.float64)[None, :]
    return float(((s > t).double() + 0.5 * (s == t).double()).mean())


def forward_logits(vl, batch) -> torch.Tensor:
    """Log-probs [B, L, V] at every position of a collate batch (small vocab: fine for eval)."""
    kwargs = {k: v for k, v in batch.items() if k not in ("labels", "first")}
    vl.model.model.rope_deltas = None
    out = vl.model(**kwargs, use_cache=False)
    return torch.log_softmax(out.logits.float(), dim=-1)


@torch.no_grad()
def evaluate(vl, clips, examples, *, batch_size: int = 32) -> dict:
    """Metrics of the held-out `examples` (see the module docstring); the model is left in its mode."""
    from tempo_fast.pretrain.data import _answer_ids
    from tempo_fast.pretrain.tasks import NO, YES

    yes_ids, no_ids = _answer_ids(vl, YES).tolist(), _answer_ids(vl, NO).tolist()
    d = next(k for k, (a, b) in enumerate(zip(yes_ids, no_ids)) if a != b)  # the decision token
    yes, no = yes_ids[d], no_ids[d]
    was_training = vl.model.training
    vl.model.eval()
    per: dict[str, dict[str, list]] = {}
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate(vl, clips, [e for _, e in chunk])
            logp = forward_logits(vl, batch)
            for row, (group, e) in enumerate(chunk):
                slot = per.setdefault(group, {"score": [], "label": [], "tokens": [], "whole": []})
                f = int(batch["first"][row])
                if e.label >= 0:
                    slot["score"].append(float(logp[row, f + d, yes] - logp[row, f + d, no]))
                    slot["label"].append(e.label)
                n = len(e.answer)
                pred = logp[row, f:f + n].argmax(-1)
                right = (pred == e.answer).tolist()
                slot["tokens"] += right if group == "caption" else [all(right)]
                slot["whole"].append(all(right))
    finally:
        vl.model.train(was_training)
    metrics = {}
    for group, slot in per.items():
        if slot["label"]:
            acc = sum((s > 0) == (y == 1) for s, y in zip(slot["score"], slot["label"])) / len(slot["label"])
            metrics[f"{group}_acc"] = acc
            metrics[f"{group}_auc"] = auc(slot["score"], slot["label"])
        elif group == "caption":
            metrics["caption_token_acc"] = sum(slot["tokens"]) / max(1, len(slot["tokens"]))
            metrics["caption_exact"] = sum(slot["whole"]) / max(1, len(slot["whole"]))
        else:
            metrics[f"{group}_acc"] = sum(slot["tokens"]) / max(1, len(slot["tokens"]))
    return metrics

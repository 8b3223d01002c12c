"""Training samples: the synthetic set on disk, PIR negatives mixed in, frames decoded once, a
resumable shuffled order.

- `prepare_synthetic(data_cfg)`: renders the synthetic set into `data_cfg.root` when it is missing
  or smaller than asked (rank 0 only under torchrun; the others wait), then loads every split and
  the facts sidecar.
- `GroundingSamples(records, vl, data_cfg, facts=...)`: map-style set. The first `max_samples`
  relevant records, of which `irrelevant_fraction` / `partial_fraction` are replaced by PIR samples
  (`tempo_fast.data.make_pir_samples`, seeded by `data_cfg.seed`, exact with the facts); item i is
  a `Sample(prompt, record, relevance, target)` with `target = format_answer(windows or None)`.
  Each video's frames are decoded once (SAA, or uniform times) and kept in memory: the synthetic
  clips are tiny (8 frames of 64x64 are 100 KB). Each item is built once, on first access (resize,
  normalise, tokenise, position ids on `device`), and kept: a later access returns the same
  `Sample`; the queries of one video share one pixel tensor. Frames and prompts come from a
  `tempo_fast.train.prompts.PromptCache`: the set's own, or the process-wide one inside
  `shared_prompt_cache()` (the demo's several runs over the same clips build each prompt once).
- `SampleOrder(n, seed)`: an endless sequence of epochs, each a fresh permutation seeded by
  (seed, epoch) alone, so the order depends on nothing but its (epoch, position) state.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tempo_fast.data.loaders import GroundingRecord
from tempo_fast.train.prompts import current_cache, sample_frames  # noqa: F401  (sample_frames: re-exported)


@dataclass
class Sample:
    """One training sample: the model's prompt and the answer it should give."""

    prompt: object              # tempo_fast.model.PromptInputs of the video + query
    record: GroundingRecord     # the (possibly PIR) record it came from
    relevance: str              # "relevant", "irrelevant" or "partial"
    target: str                 # the answer text, `<answer>s to e</answer>` or `<answer>none</answer>`


def _split_records(root: Path, split: str):
    from tempo_fast.data.loaders import load_qvhighlights

    return list(load_qvhighlights(root / f"{split}.jsonl", root / "videos"))


def prepare_synthetic(data_cfg, *, progress: bool = False):
    """(root, {split: records}, facts) of the synthetic set in `data_cfg.root`, rendered if needed."""
    from tempo_fast.data.synthetic import SPLITS, SynthConfig, generate_synthetic, load_facts
    from tempo_fast.train.dist import barrier, is_main

    root = Path(data_cfg.root)
    if is_main():
        facts_file = root / "facts.jsonl"
        have = sum(1 for line in open(facts_file, encoding="utf-8") if line.strip()) if facts_file.is_file() else 0
        if have != data_cfg.num_videos or not all((root / f"{s}.jsonl").is_file() for s in SPLITS):
            distractors = ({} if data_cfg.distractor_prob is None else
                           {f"{d}_prob": data_cfg.distractor_prob for d in ("shake", "brightness", "cut")})
            config = SynthConfig(num_videos=data_cfg.num_videos, seed=data_cfg.seed, width=data_cfg.clip_size,
                                 height=data_cfg.clip_size, min_seconds=data_cfg.min_seconds,
                                 max_seconds=data_cfg.max_seconds, min_objects=data_cfg.min_objects,
                                 max_objects=data_cfg.max_objects, event_scale=data_cfg.event_scale,
                                 events_per_object=data_cfg.events_per_object,
                                 split_fractions=tuple(data_cfg.split_fractions), **distractors)
            generate_synthetic(root, config, progress=progress)
    barrier()
    records = {split: _split_records(root, split) for split in SPLITS}
    return root, records, load_facts(root)


def pir_records(records: list, data_cfg, facts) -> list:
    """The records mixed with PIR samples in data_cfg's fractions (unchanged when both are 0)."""
    from tempo_fast.data.pir import PIRConfig, make_pir_samples

    if data_cfg.irrelevant_fraction == 0 and data_cfg.partial_fraction == 0:
        return records
    if any(r.relevance != "relevant" for r in records):
        return records  # PIR samples already made by the caller
    pir = PIRConfig(irrelevant_fraction=data_cfg.irrelevant_fraction, partial_fraction=data_cfg.partial_fraction)
    return make_pir_samples(records, pir, seed=data_cfg.seed, facts=facts)


class GroundingSamples:
    """Map-style training set over (PIR-mixed) records; frames cached per video."""

    def __init__(self, records, vl, data_cfg, *, facts=None, device="cpu"):
        records = list(records)
        if data_cfg.max_samples is not None:
            records = records[:data_cfg.max_samples]
        if not records:
            raise ValueError("GroundingSamples: no records (empty split, or max_samples=0)")
        for record in records:
            if record.video_path is None:
                raise ValueError(f"GroundingSamples: record {record.id!r} has no video path "
                                 "(load the annotations with a videos folder)")
        self.records = pir_records(records, data_cfg, facts)
        self.vl = vl
        self.cfg = data_cfg
        self.device = torch.device(device)
        self._cache = current_cache()
        self._items: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """How many samples of each relevance kind."""
        out = {"relevant": 0, "irrelevant": 0, "partial": 0}
        for record in self.records:
            out[record.relevance] += 1
        return out

    def frames(self, record: GroundingRecord):
        """The video's sampled frames (decoded on first use, then cached)."""
        return self._cache.frames_of(record.video_path, self.cfg)

    def __getitem__(self, index: int) -> Sample:
        from tempo_fast.rewards import format_answer

        if not -len(self) <= index < len(self):
            raise IndexError(f"GroundingSamples: index {index} out of range for {len(self)} samples")
        index %= len(self)
        item = self._items.get(index)
        if item is None:
            record = self.records[index]
            prompt = self._cache.prompt(self.vl, record.video_path, record.query, self.cfg, self.device)
            target = format_answer(record.windows if record.windows else None)
            item = self._items[index] = Sample(prompt=prompt, record=record, relevance=record.relevance,
                                               target=target)
        return item


class SampleOrder:
    """Shuffled sample indices, epoch after epoch, resumable from (epoch, position)."""

    def __init__(self, n: int, seed: int = 0):
        if n < 1:
            raise ValueError(f"SampleOrder: n must be >= 1, got {n}")
        self.n, self.seed = int(n), int(seed)
        self.epoch, self.position = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator).tolist()

    @property
    def drawn(self) -> int:
        """How many indices have been taken so far: the stream index of the next one."""
        return self.epoch * self.n + self.position

    def take(self, k: int) -> list[int]:
        """The next `k` indices (crossing into the next epoch when this one runs out)."""
        out = []
        while len(out) < k:
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            grab = min(k - len(out), self.n - self.position)
            out.extend(self._perm[self.position:self.position + grab])
            self.position += grab
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n", self.n) != self.n or state.get("seed", self.seed) != self.seed:
            raise ValueError(f"SampleOrder: state is for n={state.get('n')}, seed={state.get('seed')}; "
                             f"this order has n={self.n}, seed={self.seed} (did the data settings change?)")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)

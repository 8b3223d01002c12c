"""Grounding inference: `ground` answers one (video, query) pair, `predict` a whole data set.

config.py: `InferConfig`; grounding.py: one query (`ground`, `Grounder`, candidate scoring);
files.py: prediction files (resume, shards, merge); frame_cache.py: each video decoded once per
run for all its queries; pipeline.py: `predict` (prefetching workers, batches of prompts per
forward, torchrun shards).
"""
from .config import SCORES, InferConfig, batch_limits
from .files import merge_shards, read_predictions, shard_path
from .frame_cache import FrameCache
from .grounding import (TIMING_KEYS, Grounder, answer_likelihoods, ground, load, merge_candidates, pixel_bounds,
                        prepare, query_seed, sample_frames)
from .pipeline import STAGES, predict

__all__ = ["SCORES", "STAGES", "TIMING_KEYS", "FrameCache", "Grounder", "InferConfig", "answer_likelihoods",
           "batch_limits", "ground", "load", "merge_candidates", "merge_shards", "pixel_bounds", "predict", "prepare",
           "query_seed", "read_predictions", "sample_frames", "shard_path"]

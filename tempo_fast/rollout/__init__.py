"""Generation for GRPO and inference: G sampled completions of each of B video prompts, one
prefill for all B prompts, each prompt's cache shared by its G rows.

    engine = RolloutEngine(vl, SamplingConfig(max_new_tokens=64, temperature=1.0))
    rollouts = engine.generate_many(prompts, 8, generator=[torch.Generator().manual_seed(s) for s in seeds])

engine.py: the engine and `Rollout`; sampling.py: `SamplingConfig`, the sampler and its random
numbers; batching.py: padding B prompts into one prefill, planning batches; cache.py: the shared
static KV caches; invariant.py: batch-invariant attention.
"""
from .batching import PromptBatch, pad_prompts, plan_batches
from .engine import Rollout, RolloutEngine
from .sampling import SamplingConfig, draw_block, draw_uniforms, sample_tokens

__all__ = ["PromptBatch", "Rollout", "RolloutEngine", "SamplingConfig", "draw_block", "draw_uniforms",
           "pad_prompts", "plan_batches", "sample_tokens"]

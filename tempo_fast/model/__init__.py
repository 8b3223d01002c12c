"""Qwen2.5-VL / Qwen3-VL through transformers: local checkpoints, the offline `tiny` preset, and
grounding prompts (ETA layout, time-true position ids) as model inputs.

    vl = load_model("tiny")                       # or a local checkpoint folder
    prompt = build_prompt(vl, frames, "the red circle moves")
    out = vl.model(**forward_kwargs(prompt))

Importing this package loads neither transformers nor a video library.
"""
from .loading import VLModel, load_model
from .prompt import PromptInputs, build_prompt, forward_kwargs
from .tiny import build_tiny

__all__ = ["PromptInputs", "VLModel", "build_prompt", "build_tiny", "forward_kwargs", "load_model"]

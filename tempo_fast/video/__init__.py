"""Video into model inputs: decode (torchcodec CPU/CUDA, DALI), SAA sampling, ETA layout and
on-device preprocessing into Qwen2.5-VL / Qwen3-VL video inputs.

Names are resolved on first use, so `import tempo_fast.video` loads no decoder library.
"""
import importlib

_EXPORTS = {
    # decode.py
    "Frames": "decode", "VideoError": "decode", "decode": "decode", "probe": "decode",
    # saa.py
    "saa_sample": "saa", "saa_density": "saa", "saa_slot_times": "saa", "choose_budget": "saa",
    # eta.py
    "eta_prompt": "eta", "eta_position_ids": "eta",
    # preprocess.py
    "smart_resize": "preprocess", "video_inputs": "preprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tempo_fast.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value

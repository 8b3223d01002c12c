"""Video into model inputs: decode (torchcodec CPU/CUDA, DALI), SAA sampling, ETA layout and
on-device preprocessing into Qwen2.5-VL / Qwen3-VL video inputs.

Importing this package loads no decoder library: torchcodec, PyAV and DALI are imported by the
functions that use them.
"""
from .decode import Frames, VideoError, decode, probe
from .eta import eta_position_ids, eta_prompt
from .preprocess import smart_resize, video_inputs
from .saa import choose_budget, saa_density, saa_plan, saa_sample, saa_slot_times, uniform_times

__all__ = ["Frames", "VideoError", "choose_budget", "decode", "eta_position_ids", "eta_prompt", "probe",
           "saa_density", "saa_plan", "saa_sample", "saa_slot_times", "smart_resize", "uniform_times",
           "video_inputs"]

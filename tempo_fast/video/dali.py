"""DALI backend for `tempo_fast.video.decode`: NVDEC decoding straight into GPU memory.

Optional (the GPU extra `nvidia-dali-cuda120` or similar); imported only when the "dali" backend
is used. The encoded file is read into host memory once and fed to a one-sample DALI pipeline
whose video decoder runs on the "mixed" device (demuxing on the CPU, NVDEC decoding into GPU
memory). The decoder is `fn.decoders.video` (DALI >= 1.47), or `fn.experimental.decoders.video`
in older releases; both take the encoded bytes from `fn.external_source`. When the decoder
accepts `frames=` (a list of frame indices, any order, repeats allowed), only those frames are
produced; otherwise every frame is decoded and the wanted ones are gathered on the GPU.

The output (one sequence `[F, H, W, C]` uint8 on the GPU) is copied device-to-device into a torch
tensor with DALI's `feed_ndarray`, so frames never pass through host memory. Codecs: H.264, HEVC, VP8, VP9, MJPEG, AV1 and MPEG-4 on the
mixed backend (DALI's documented list); anything else raises BackendUnavailable before DALI runs.
DALI builds one pipeline per call (a fraction of a second): fine for long videos, and the
reason torchcodec is the default for many short clips.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from tempo_fast.video.decode import BackendUnavailable, VideoError

CODECS = ("h264", "hevc", "vp8", "vp9", "mjpeg", "av1", "mpeg4")


def _dali():
    try:
        from nvidia import dali
        from nvidia.dali import fn, types
        from nvidia.dali.plugin.pytorch import feed_ndarray
    except ImportError as err:
        raise BackendUnavailable(
            "the 'dali' backend needs NVIDIA DALI, which is not installed (pip install "
            "nvidia-dali-cuda120 --extra-index-url https://pypi.nvidia.com)") from err
    return dali, fn, types, feed_ndarray


def _video_decoder(fn):
    decoders = getattr(fn, "decoders", None)
    if decoders is not None and hasattr(decoders, "video"):
        return decoders.video
    experimental = getattr(getattr(fn, "experimental", None), "decoders", None)
    if experimental is not None and hasattr(experimental, "video"):
        return experimental.video
    raise BackendUnavailable("this DALI release has neither fn.decoders.video nor "
                             "fn.experimental.decoders.video")


def _accepts_frames(op) -> bool:
    try:
        return "frames" in inspect.signature(op).parameters
    except (TypeError, ValueError):  # a C-level callable without a signature: check the doc
        return "frames (" in (op.__doc__ or "")


def decode_indices(path: str, index: list[int], *, device: torch.device, codec: str) -> torch.Tensor:
    """Frames `index` of `path` as uint8 `[T, C, H, W]` on the CUDA `device`."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"the DALI backend decodes on a CUDA device only, got {device}")
    if codec not in CODECS:
        raise BackendUnavailable(f"DALI cannot decode codec {codec!r} of {path} "
                                 f"(it decodes {', '.join(CODECS)})")
    dali, fn, types, feed_ndarray = _dali()
    op = _video_decoder(fn)
    select = _accepts_frames(op)
    encoded = np.fromfile(path, dtype=np.uint8)
    device_id = device.index if device.index is not None else torch.cuda.current_device()

    @dali.pipeline_def(batch_size=1, num_threads=2, device_id=device_id, prefetch_queue_depth=1)
    def pipeline():
        data = fn.external_source(name="encoded", dtype=types.UINT8, device="cpu")
        if select:
            return op(data, device="mixed", frames=[int(i) for i in index])
        return op(data, device="mixed")

    pipe = pipeline()
    try:
        pipe.build()
        pipe.feed_input("encoded", [encoded])
        (out,) = pipe.run()
        sequence = out[0]
        frames = torch.empty(tuple(sequence.shape()), dtype=torch.uint8, device=device)
        feed_ndarray(sequence, frames, cuda_stream=torch.cuda.current_stream(device))
    except Exception as err:  # DALI raises RuntimeError with the decoder's message
        raise VideoError(f"{path}: DALI failed to decode it: {err}") from err
    finally:
        del pipe
    if not select:
        frames = frames[torch.as_tensor(index, device=frames.device, dtype=torch.long)]
    if frames.shape[0] != len(index):
        raise VideoError(f"{path}: DALI returned {frames.shape[0]} frames, expected {len(index)}")
    return frames.permute(0, 3, 1, 2)

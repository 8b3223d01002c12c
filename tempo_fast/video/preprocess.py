"""On-device preprocessing of decoded frames into Qwen2-VL / Qwen2.5-VL video inputs.

`video_inputs(frames)` does what transformers' `Qwen2VLVideoProcessor` does, on the frames' device
(a CUDA decode stays on the GPU: no host round trip):

1. size: `smart_resize(H, W, factor=patch_size*merge_size, min_pixels, max_pixels)` (Qwen's
   rounding rules), unless `size=(h, w)` is given (e.g. by the SAA budget chooser);
2. resize, antialiased bicubic (PIL's, a = -0.5), exactly as torchvision resizes uint8 frames,
   which differs by device:
   - CPU: torch's native uint8 kernel (int16 fixed-point weights, the horizontal pass rounded to
     uint8 before the vertical pass), what the processor runs on CPU;
   - CUDA: uint8 -> float32, `interpolate(mode="bicubic", antialias=True)`, clamp to [0, 255] and
     round, what the processor runs on CUDA. `quantize=False` keeps the unrounded floats (on
     either device; on the CPU that is the float path, not the processor's);
3. rescale by 1/255 and normalise per channel: (x/255 - mean)/std (OpenAI CLIP's mean/std by
   default), computed in float32 as (x - 255 mean)/(255 std) like transformers' fused op;
4. pad T to a multiple of temporal_patch_size by repeating the last frame;
5. patchify: the frames `[T, C, H, W]` viewed as
   `[grid_t, tp, C, gh/m, m, p, gw/m, m, p]` (tp = temporal_patch_size, p = patch_size,
   m = merge_size, gh = H/p, gw = W/p) and permuted to
   `[grid_t, gh/m, gw/m, m, m, C, tp, p, p]`, flattened to `[grid_t*gh*gw, C*tp*p*p]`: rows
   run over temporal patch, merged-block row, merged-block column, row and column inside the
   block; each row holds channel, frame-in-patch, pixel row, pixel column.

Backends: "torch" (the steps above with torch ops, chunk by chunk) and "native" (the
`tempo_fast._C` op `preprocess_video`: all five steps fused, the output written once;
kernels/cpu/preprocess.cpp, threads over frames and row bands, bit-equal to "torch" on the CPU;
kernels/cuda/preprocess.cu, the float path, compiled for sm_90a but not yet run on a GPU).
`backend=None` takes native on the CPU when the extension is built (3.7-4.5x transformers'
processor on 32 decoded 720p frames, 2 busy cores: benchmarks/bench_preprocess.py) and torch
otherwise, and on CUDA, where the native kernel has not been measured yet.

Timing: transformers does not know when pre-decoded frames were taken (it assumes 24 fps unless
given video metadata), so the real pts travel with the frames. `second_per_grid_ts` (Qwen2.5-VL's
seconds per temporal patch, used by its rotary index) is temporal_patch_size times the mean frame
spacing (pts[-1] - pts[0]) / (T - 1): exactly 2/f for uniform sampling at f fps, as the processor
computes from the sampled fps. For non-uniform (SAA) sampling use `slot_times` with
`tempo_fast.video.eta`. With a single frame it is temporal_patch_size / fps (fps from the Frames
object, else 1).

Qwen3-VL uses patch_size=16 and mean = std = (0.5, 0.5, 0.5); pass those (and its own size).
Memory: "torch" resizes `chunk_frames` frames at a time; besides the output only one chunk's
float32 copy is alive. "native" holds the output and a few uint8 rows per thread. Bytes written:
N * C*tp*p*p * itemsize of the output dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen2VLVideoProcessor's default size bounds: 128 to 768 merged tokens per frame.
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """(h, w) both multiples of `factor`, h*w within [min_pixels, max_pixels] (when the bounds allow),
    aspect ratio kept as closely as rounding permits: Qwen2-VL's rule.

    First each side is rounded to the nearest multiple of `factor` (Python's round: halves go to
    the even multiple); if that has too many pixels both sides are scaled by
    sqrt(H*W / max_pixels) and floored to a multiple (at least `factor`); if too few, scaled by
    sqrt(min_pixels / (H*W)) and ceiled.
    """
    for name, value in (("height", height), ("width", width), ("factor", factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"smart_resize: {name} must be a positive int, got {value!r}")
    if min_pixels < 0 or max_pixels < 1 or min_pixels > max_pixels:
        raise ValueError(f"smart_resize: need 0 <= min_pixels <= max_pixels and max_pixels >= 1, "
                         f"got min_pixels={min_pixels}, max_pixels={max_pixels}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"smart_resize: aspect ratio must be at most 200, got {height}x{width} "
                         f"({max(height, width) / min(height, width):.1f})")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _unpack(frames, pts):
    """(data, pts, fps) from a Frames-like object, a (data, pts) pair or a tensor plus `pts`."""
    fps = None
    if isinstance(frames, torch.Tensor):
        data = frames
    elif isinstance(frames, (tuple, list)):
        if len(frames) != 2:
            raise ValueError(f"video_inputs: frames as a sequence must be (data, pts), got {len(frames)} items")
        data, pts_in = frames
        pts = pts_in if pts is None else pts
    elif hasattr(frames, "data") and hasattr(frames, "pts"):
        data, fps = frames.data, getattr(frames, "fps", None)
        pts = frames.pts if pts is None else pts
    else:
        raise TypeError(f"video_inputs: frames must be a Frames object, a (data, pts) pair or a uint8 "
                        f"tensor, got {type(frames).__name__}")
    if pts is None:
        raise ValueError("video_inputs: frame times are needed (pass a Frames object, (data, pts), or pts=); "
                         "transformers would silently assume 24 fps here")
    return data, pts, fps


BACKENDS = ("torch", "native")


def _check_frames(data, pts, channels_last):
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"video_inputs: frame data must be a torch.Tensor, got {type(data).__name__}")
    if data.dtype != torch.uint8:
        layout = "[T, H, W, C]" if channels_last else "[T, C, H, W]"
        raise TypeError(f"video_inputs: frames must be uint8 {layout}, got dtype {data.dtype}")
    if channels_last:
        if data.dim() != 4 or data.shape[3] not in (1, 3):
            raise ValueError(f"video_inputs: frames must be [T, H, W, C] with C = 3 (or 1) "
                             f"(channels_last=True), got shape {tuple(data.shape)}")
        data = data.permute(0, 3, 1, 2)
    elif data.dim() != 4 or data.shape[1] not in (1, 3):
        hint = " (channels last? pass channels_last=True)" if data.dim() == 4 and data.shape[-1] in (1, 3) else ""
        raise ValueError(f"video_inputs: frames must be [T, C, H, W] with C = 3 (or 1), got shape "
                         f"{tuple(data.shape)}{hint}")
    if data.shape[0] == 0:
        raise ValueError("video_inputs: got T=0 frames; at least one frame is needed")
    if data.shape[2] == 0 or data.shape[3] == 0:
        raise ValueError(f"video_inputs: frames have an empty side, shape {tuple(data.shape)}")
    pts = torch.as_tensor(pts, dtype=torch.float64).cpu()
    if pts.dim() != 1 or pts.numel() != data.shape[0]:
        raise ValueError(f"video_inputs: pts must be 1-D with one time per frame ({data.shape[0]}), "
                         f"got shape {tuple(pts.shape)}")
    if not torch.isfinite(pts).all() or bool((pts[1:] < pts[:-1]).any()):
        raise ValueError(f"video_inputs: pts must be finite and sorted (non-decreasing), got {pts.tolist()}")
    return data, pts


def _resize(chunk, size, quantize):
    """uint8 `[n, C, H, W]` resized as torchvision resizes it on this device (see the docstring)."""
    if tuple(chunk.shape[-2:]) == size:
        return chunk
    if chunk.device.type == "cpu" and quantize:
        return F.interpolate(chunk, size=size, mode="bicubic", antialias=True, align_corners=False)
    x = F.interpolate(chunk.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255).round_() if quantize else x


def video_inputs_torch(data, size, *, temporal_patch_size, patch_size, merge_size, shift, scale,
                       dtype, quantize, chunk_frames):
    """The torch twin: uint8 `[T, C, H, W]` -> `pixel_values_videos`, `chunk_frames` at a time."""
    n_frames, channels = data.shape[:2]
    tp, p, m = temporal_patch_size, patch_size, merge_size
    grid_t, gh, gw = -(-n_frames // tp), size[0] // p, size[1] // p
    out = torch.empty(grid_t, gh // m, gw // m, m, m, channels, tp, p, p, device=data.device, dtype=dtype)
    # the same memory seen frame by frame: [grid_t, tp, C, gh/m, m, p, gw/m, m, p]
    frames9 = out.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)
    shift = shift.to(data.device).view(1, -1, 1, 1)
    scale = scale.to(data.device).view(1, 1, -1, 1, 1, 1, 1, 1, 1)
    step = max(tp, chunk_frames // tp * tp)  # whole temporal patches per chunk
    for f0 in range(0, n_frames, step):
        chunk = _resize(data[f0:f0 + step], size, quantize)
        if pad := -chunk.shape[0] % tp:  # only the last chunk: repeat the last frame
            chunk = torch.cat([chunk, chunk[-1:].expand(pad, -1, -1, -1)])
        # uint8 - float32 computes in float32, as (x.float() - shift) would (into a contiguous
        # buffer whatever the chunk's layout); the division writes straight into the patch layout
        x = torch.sub(chunk, shift, out=torch.empty(chunk.shape, device=chunk.device, dtype=torch.float32))
        x = x.view(-1, tp, channels, gh // m, m, p, gw // m, m, p)
        dst = frames9[f0 // tp:f0 // tp + x.shape[0]]
        if dtype == torch.float32:
            torch.div(x, scale, out=dst)
        else:
            dst.copy_(x.div_(scale))
    return out.view(grid_t * gh * gw, channels * tp * p * p)


def video_inputs_native(data, size, *, temporal_patch_size, patch_size, merge_size, shift, scale,
                        dtype, quantize, channels_last=False):
    """The fused native op (tempo_fast._C); `data` as given by the caller (either layout)."""
    from tempo_fast import _native

    _native.load()
    if not _native.has_kernel("preprocess_video", data.device.type):
        raise RuntimeError(f"video_inputs(backend='native'): tempo_fast._C has no preprocess_video kernel for "
                           f"{data.device.type} tensors (the CUDA kernel is built only where torch has CUDA)")
    isa = _native.cpu_isa() if data.device.type == "cpu" else -1
    return torch.ops.tempo_fast.preprocess_video(
        data, channels_last, size[0], size[1], temporal_patch_size, patch_size, merge_size,
        shift.to(data.device), scale.to(data.device), dtype, quantize, isa)


def _native_ready(device, quantize) -> bool:
    """backend=None takes native where it was measured faster: the CPU uint8 path."""
    if device.type != "cpu" or not quantize:
        return False
    from tempo_fast import _native
    return _native.has_kernel("preprocess_video", "cpu")


def video_inputs(frames, *, pts=None, min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS,
                 size: tuple[int, int] | None = None, temporal_patch_size: int = 2, patch_size: int = 14,
                 merge_size: int = 2, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, device=None,
                 dtype: torch.dtype = torch.float32, quantize: bool = True, chunk_frames: int = 32,
                 channels_last: bool = False, backend: str | None = None) -> dict[str, torch.Tensor]:
    """Qwen2.5-VL video inputs from uint8 frames `[T, C, H, W]`, computed on `device`.

    frames: a `tempo_fast.video.Frames`, a `(data, pts)` pair, or a tensor with `pts=` (seconds);
    `[T, H, W, C]` with channels_last=True. Any strides.
    device: where to compute (default: the frames' device); the uint8 frames are moved, not floats.
    On the CPU the result equals transformers' processor run on the CPU (torch's uint8 resize), on
    CUDA the processor run on CUDA (its float resize); see the module docstring.
    backend: None (native on the CPU when built, else torch), "torch" or "native".
    Returns a dict:
      pixel_values_videos `[grid_t*gh*gw, C*temporal_patch_size*patch_size**2]` dtype (1176 for Qwen2.5-VL),
      video_grid_thw `[1, 3]` int64 (grid_t, gh, gw),
      second_per_grid_ts `[1]` float32 (see the module docstring),
      slot_times `[grid_t]` float64, mean time of each temporal patch (for the ETA layout);
    all on `device`.
    """
    data, pts, fps = _unpack(frames, pts)
    given = data
    data, pts = _check_frames(data, pts, channels_last)
    for name, value in (("temporal_patch_size", temporal_patch_size), ("patch_size", patch_size),
                        ("merge_size", merge_size), ("chunk_frames", chunk_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"video_inputs: {name} must be a positive int, got {value!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise TypeError(f"video_inputs: dtype must be float32, bfloat16, float16 or float64, got {dtype}")
    if backend not in (None,) + BACKENDS:
        raise ValueError(f"video_inputs: backend must be None or one of {BACKENDS}, got {backend!r}")
    channels = data.shape[1]
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if mean_t.numel() != channels or std_t.numel() != channels or bool((std_t <= 0).any()):
        raise ValueError(f"video_inputs: mean and std need {channels} values each (std > 0), "
                         f"got mean={mean_t.tolist()}, std={std_t.tolist()}")
    factor = patch_size * merge_size
    if size is None:
        size = smart_resize(int(data.shape[2]), int(data.shape[3]), factor, min_pixels, max_pixels)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or size[0] < factor or size[1] < factor or size[0] % factor or size[1] % factor:
        raise ValueError(f"video_inputs: size must be (h, w), multiples of patch_size*merge_size={factor}, "
                         f"got {size}")

    device = data.device if device is None else torch.device(device)
    # float32 mean and std times 1/(1/255), as transformers' fused rescale-normalise builds them
    shift = mean_t.float() * (1.0 / (1 / 255))
    scale = std_t.float() * (1.0 / (1 / 255))
    args = dict(temporal_patch_size=temporal_patch_size, patch_size=patch_size, merge_size=merge_size,
                shift=shift, scale=scale, dtype=dtype, quantize=quantize)
    if backend == "native" or (backend is None and dtype != torch.float64 and _native_ready(device, quantize)):
        pixels = video_inputs_native(given.to(device, non_blocking=True), size, channels_last=channels_last,
                                     **args)
    else:
        pixels = video_inputs_torch(data.to(device, non_blocking=True), size, chunk_frames=chunk_frames, **args)

    n_frames, tp = data.shape[0], temporal_patch_size
    grid_t = -(-n_frames // tp)
    if n_frames > 1:
        spg = tp * (pts[-1] - pts[0]).item() / (n_frames - 1)
    else:
        spg = tp / (fps if fps else 1.0)
    padded = torch.cat([pts, pts[-1:].expand(-n_frames % tp)]).view(grid_t, tp)
    return {
        "pixel_values_videos": pixels,
        "video_grid_thw": torch.tensor([[grid_t, size[0] // patch_size, size[1] // patch_size]],
                                       dtype=torch.long, device=device),
        "second_per_grid_ts": torch.tensor([spg], dtype=torch.float32, device=device),
        "slot_times": ((padded[:, 0] + padded[:, -1]) / 2).to(device),
    }

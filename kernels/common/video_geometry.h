// The geometry of one preprocess_video call, shared by the CPU and CUDA kernels: input frames
// [T, C, H, W] (or [T, H, W, C] with channels_last) with their strides, the output frame size,
// and the temporal patch / patch / merge sizes; `video_geometry` reads it from the arguments and
// checks everything both kernels require, with messages naming the bad value.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tempo_fast {

struct VideoGeometry {
  int64_t T, C, H, W;      // input frames
  int64_t sT, sC, sH, sW;  // input strides (elements)
  int64_t h, w;            // output size
  int64_t tp, p, m;        // temporal patch, patch, merge
  int64_t grid_t() const { return (T + tp - 1) / tp; }
};

inline VideoGeometry video_geometry(const at::Tensor& frames, bool channels_last, int64_t height,
                                    int64_t width, int64_t temporal_patch_size, int64_t patch_size,
                                    int64_t merge_size, const at::Tensor& shift,
                                    const at::Tensor& scale, at::ScalarType dtype) {
  TORCH_CHECK(frames.scalar_type() == at::kByte, "preprocess_video: frames must be uint8, got ",
              frames.scalar_type());
  TORCH_CHECK(frames.dim() == 4, "preprocess_video: frames must be 4-D ([T, C, H, W] or "
              "[T, H, W, C]), got shape ", frames.sizes());
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "preprocess_video: dtype must be float32, bfloat16 or float16, got ", dtype);
  VideoGeometry g{};
  g.T = frames.size(0);
  g.C = channels_last ? frames.size(3) : frames.size(1);
  g.H = channels_last ? frames.size(1) : frames.size(2);
  g.W = channels_last ? frames.size(2) : frames.size(3);
  g.sT = frames.stride(0);
  g.sC = channels_last ? frames.stride(3) : frames.stride(1);
  g.sH = channels_last ? frames.stride(1) : frames.stride(2);
  g.sW = channels_last ? frames.stride(2) : frames.stride(3);
  g.h = height;
  g.w = width;
  g.tp = temporal_patch_size;
  g.p = patch_size;
  g.m = merge_size;
  TORCH_CHECK(g.C == 1 || g.C == 3, "preprocess_video: need 1 or 3 channels, got ", g.C,
              " (shape ", frames.sizes(), ", channels_last=", channels_last, ")");
  TORCH_CHECK(g.T > 0 && g.H > 0 && g.W > 0, "preprocess_video: empty frames, shape ", frames.sizes());
  TORCH_CHECK(g.tp > 0 && g.p > 0 && g.m > 0, "preprocess_video: patch sizes must be positive, got "
              "temporal_patch_size=", g.tp, " patch_size=", g.p, " merge_size=", g.m);
  TORCH_CHECK(g.h > 0 && g.w > 0 && g.h % (g.p * g.m) == 0 && g.w % (g.p * g.m) == 0,
              "preprocess_video: output size must be multiples of patch_size*merge_size=",
              g.p * g.m, ", got ", g.h, "x", g.w);
  TORCH_CHECK(shift.numel() == g.C && scale.numel() == g.C,
              "preprocess_video: shift and scale need ", g.C, " values each, got ", shift.numel(),
              " and ", scale.numel());
  TORCH_CHECK(g.sT >= 0 && g.sC >= 0 && g.sH >= 0 && g.sW >= 0,
              "preprocess_video: negative strides are not supported, got ", frames.strides());
  return g;
}

}  // namespace tempo_fast

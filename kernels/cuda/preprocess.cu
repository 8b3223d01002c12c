// preprocess_video (CUDA): uint8 frames -> Qwen2-VL `pixel_values_videos`, the float path that
// torchvision takes on CUDA (uint8 -> float32, antialiased bicubic, clamp to [0, 255] and round
// when `quantize`), fused with rescale + normalise and the patch layout; the schema is defined
// with the CPU kernel in kernels/cpu/preprocess.cpp (see it for the arguments and the layout).
//
// The resample follows torch's upsample_gen2d_aa_out_frame (ATen/native/cuda): the weights of
// each axis are computed on the host with the float32 operations of torch's device helpers
// (UpSample.cuh), including the multiply-adds nvcc fuses there; per output pixel each source row
// of the y-span is summed along x in float32 (fused multiply-adds), then those sums along y. So
// the values are meant to be those of F.interpolate(x.float(), mode="bicubic", antialias=True)
// on CUDA. Then (v - shift[c]) / scale[c] in float32 (a table of the 256 levels when quantized,
// else a division rounded as IEEE's) and the cast to the output dtype, like the torch twin. No
// division runs on the device: div.rn's slow-path call would spill.
//
// Grid: x and y tiles of the output frame (blocks of 32 x 8 threads, one output pixel each), z
// over frames. Each block computes its 32 x-weight rows and 8 y-weight rows once into shared
// memory; each thread then does all C channels of its pixel and writes them straight into their
// patch rows (and into the temporal padding slots for the last frame): the output is written once.
// NOT YET RUN ON A GPU: compiled for sm_90a (0 spills) only; tests/test_preprocess.py compares it
// with the torch twin where CUDA exists.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "common/video_geometry.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kBlockX = 32, kBlockY = 8;

struct Geometry {
  int T, C, H, W;              // input frames
  int64_t sT, sC, sH, sW;      // input strides (elements)
  int h, w;                    // output size
  int tp, p, m;                // temporal patch, patch, merge
  int taps_h, taps_w;          // weights per output row / column (padded table rows)
};

// One axis of the resample, computed on the host with the float32 operations torch's device
// helpers (ATen/native/cuda/UpSample.cuh: _compute_weights_span, _compute_weights with
// BicubicFilterFunctor) perform, including the multiply-adds nvcc fuses there: first source
// index and count per output index, weights [out][taps] zero-padded.
struct Axis {
  std::vector<int32_t> span;   // [out][2]: first, count
  std::vector<float> w;        // [out][taps]
  int taps = 0;
};

float cubic_like_device(float x) {
  const float a = -0.5f;
  if (x < 0) x = -x;
  if (x < 1) return std::fma(std::fma(a + 2, x, -(a + 3)) * x, x, 1.0f);
  if (x < 2) return std::fma(std::fma(x - 5, x, 8.0f), x, -4.0f) * a;
  return 0.0f;
}

Axis make_axis(int in_size, int out_size) {
  Axis ax;
  const float scale = static_cast<float>(in_size) / out_size;  // area_pixel_compute_scale<float>
  const float support = scale >= 1.0f ? (4 * 0.5f) * scale : 4 * 0.5f;
  ax.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  const float invscale = scale >= 1.0 ? static_cast<float>(1.0 / scale) : 1.0f;
  ax.span.resize(2 * size_t(out_size));
  ax.w.assign(size_t(out_size) * ax.taps, 0.0f);
  for (int i = 0; i < out_size; ++i) {
    const float center = scale * (i + 0.5f);
    const int xmin = std::max(static_cast<int>(center - support + 0.5f), 0);
    const int xsize = std::min(static_cast<int>(center + support + 0.5f), in_size) - xmin;
    float* w = ax.w.data() + size_t(i) * ax.taps;
    float total = 0.0f;
    for (int j = 0; j < xsize; ++j) {
      w[j] = cubic_like_device((j + (xmin - center) + 0.5f) * invscale);
      total += w[j];
    }
    for (int j = 0; j < xsize; ++j)
      if (total != 0.0f) w[j] /= total;
    ax.span[2 * i] = xmin;
    ax.span[2 * i + 1] = xsize;
  }
  return ax;
}

// x / y rounded to nearest like IEEE division, from a correctly rounded 1/y: one Newton step on
// the residual (exact for the normal-range operands here), without div.rn's slow-path call.
__device__ __forceinline__ float div_rn(float x, float y, float inv_y) {
  const float q = x * inv_y;
  return fmaf(fmaf(-y, q, x), inv_y, q);
}

template <typename out_t>
__global__ void __launch_bounds__(kBlockX * kBlockY) preprocess_video_kernel(
    const uint8_t* __restrict__ src, Geometry g, const int32_t* __restrict__ span_x,
    const float* __restrict__ w_x, const int32_t* __restrict__ span_y, const float* __restrict__ w_y,
    const float* __restrict__ norm, bool quantize, out_t* __restrict__ out) {
  // norm: [C][256] normalised values of the 256 uint8 levels, then [C] shift, [C] scale, [C] 1/scale
  extern __shared__ float smem[];
  float* wx = smem + g.taps_w * threadIdx.x;                       // this column's x-weights
  float* wy = smem + g.taps_w * kBlockX + g.taps_h * threadIdx.y;  // this row's y-weights
  const int x = blockIdx.x * kBlockX + threadIdx.x, y = blockIdx.y * kBlockY + threadIdx.y;
  const int f = blockIdx.z;
  if (threadIdx.y == 0 && x < g.w)
    for (int q = 0; q < g.taps_w; ++q) wx[q] = w_x[int64_t(x) * g.taps_w + q];
  if (threadIdx.x == 0 && y < g.h)
    for (int q = 0; q < g.taps_h; ++q) wy[q] = w_y[int64_t(y) * g.taps_h + q];
  __syncthreads();
  if (x >= g.w || y >= g.h) return;
  const int xmin = span_x[2 * x], xsize = span_x[2 * x + 1];
  const int ymin = span_y[2 * y], ysize = span_y[2 * y + 1];

  const int p = g.p, m = g.m, gw = g.w / p;
  const int64_t patch = int64_t(p) * p, row_elems = int64_t(g.C) * g.tp * patch;
  const int t = f / g.tp, k0 = f % g.tp, k_end = (f == g.T - 1) ? g.tp : k0 + 1;
  const int j = x / p, bw = j / m, mw = j % m, bh = (y / p) / m, mh = (y / p) % m;
  const int64_t rowi = ((((int64_t)t * (g.h / p / m) + bh) * (gw / m) + bw) * m + mh) * m + mw;
  out_t* base = out + rowi * row_elems + (y % p) * p + (x % p);
  const uint8_t* frame = src + f * g.sT;
  for (int c = 0; c < g.C; ++c) {
    const uint8_t* plane = frame + c * g.sC;
    // each source row of the span summed along x, then those sums along y (torch's order)
    float v = 0.f;
    for (int r = 0; r < ysize; ++r) {
      const uint8_t* line = plane + int64_t(ymin + r) * g.sH + int64_t(xmin) * g.sW;
      float s = static_cast<float>(line[0]) * wx[0];
      for (int q = 1; q < xsize; ++q) s = fmaf(static_cast<float>(line[q * g.sW]), wx[q], s);
      v = r == 0 ? s * wy[0] : fmaf(s, wy[r], v);
    }
    float o;
    if (quantize) {
      o = norm[c * 256 + static_cast<int>(rintf(fminf(fmaxf(v, 0.f), 255.f)))];
    } else {
      const float* k = norm + g.C * 256;
      o = div_rn(v - k[c], k[g.C + c], k[2 * g.C + c]);
    }
    const out_t value = static_cast<out_t>(o);
    for (int k = k0; k < k_end; ++k) base[(int64_t(c) * g.tp + k) * patch] = value;
  }
}

at::Tensor preprocess_video_cuda(const at::Tensor& frames, bool channels_last, int64_t height,
                                 int64_t width, int64_t temporal_patch_size, int64_t patch_size,
                                 int64_t merge_size, const at::Tensor& shift, const at::Tensor& scale,
                                 at::ScalarType dtype, bool quantize, int64_t isa) {
  TORCH_CHECK(frames.is_cuda(), "preprocess_video: frames must be on a CUDA device");
  const tempo_fast::VideoGeometry v = tempo_fast::video_geometry(
      frames, channels_last, height, width, temporal_patch_size, patch_size, merge_size, shift, scale, dtype);
  Geometry g{};  // the kernel's 32-bit copy
  g.T = int(v.T); g.C = int(v.C); g.H = int(v.H); g.W = int(v.W);
  g.sT = v.sT; g.sC = v.sC; g.sH = v.sH; g.sW = v.sW;
  g.h = int(v.h); g.w = int(v.w);
  g.tp = int(v.tp); g.p = int(v.p); g.m = int(v.m);
  TORCH_CHECK(g.T <= 65535, "preprocess_video: at most 65535 frames per call on CUDA, got ", g.T);
  const at::Tensor sh = shift.to(at::kCPU, at::kFloat).contiguous(), sc = scale.to(at::kCPU, at::kFloat).contiguous();
  const float* shp = sh.const_data_ptr<float>();
  const float* scp = sc.const_data_ptr<float>();
  const Axis ax_w = make_axis(g.W, g.w), ax_h = make_axis(g.H, g.h);
  g.taps_w = ax_w.taps;
  g.taps_h = ax_h.taps;
  const size_t smem = sizeof(float) * (size_t(g.taps_w) * kBlockX + size_t(g.taps_h) * kBlockY);
  TORCH_CHECK(smem <= 48 * 1024, "preprocess_video: downscaling ", g.H, "x", g.W, " to ", g.h, "x",
              g.w, " needs ", smem, " bytes of shared memory for the weights, over 48 KiB");
  // the 256 levels normalised with IEEE float32 division, as torch's (x - shift) / scale
  std::vector<float> norm(size_t(g.C) * 259);
  for (int c = 0; c < g.C; ++c) {
    for (int v = 0; v < 256; ++v) norm[c * 256 + v] = (static_cast<float>(v) - shp[c]) / scp[c];
    norm[g.C * 256 + c] = shp[c];
    norm[g.C * 257 + c] = scp[c];
    norm[g.C * 258 + c] = 1.0f / scp[c];
  }

  const c10::cuda::CUDAGuard guard(frames.device());
  const auto on_device = [&](const void* data, size_t bytes) {
    at::Tensor host = at::empty({int64_t(bytes)}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(host.data_ptr(), data, bytes);
    return host.to(frames.device(), /*non_blocking=*/false);
  };
  const at::Tensor d_span_x = on_device(ax_w.span.data(), ax_w.span.size() * sizeof(int32_t));
  const at::Tensor d_w_x = on_device(ax_w.w.data(), ax_w.w.size() * sizeof(float));
  const at::Tensor d_span_y = on_device(ax_h.span.data(), ax_h.span.size() * sizeof(int32_t));
  const at::Tensor d_w_y = on_device(ax_h.w.data(), ax_h.w.size() * sizeof(float));
  const at::Tensor d_norm = on_device(norm.data(), norm.size() * sizeof(float));
  at::Tensor out = at::empty({int64_t((g.T + g.tp - 1) / g.tp) * (g.h / g.p) * (g.w / g.p),
                              int64_t(g.C) * g.tp * g.p * g.p}, frames.options().dtype(dtype));
  const dim3 block(kBlockX, kBlockY), grid((g.w + kBlockX - 1) / kBlockX, (g.h + kBlockY - 1) / kBlockY, g.T);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const uint8_t* src = frames.const_data_ptr<uint8_t>();
  const auto* sx = reinterpret_cast<const int32_t*>(d_span_x.const_data_ptr());
  const auto* wx = reinterpret_cast<const float*>(d_w_x.const_data_ptr());
  const auto* sy = reinterpret_cast<const int32_t*>(d_span_y.const_data_ptr());
  const auto* wy = reinterpret_cast<const float*>(d_w_y.const_data_ptr());
  const auto* nm = reinterpret_cast<const float*>(d_norm.const_data_ptr());
  if (dtype == at::kFloat) {
    preprocess_video_kernel<float><<<grid, block, smem, stream>>>(src, g, sx, wx, sy, wy, nm, quantize,
                                                                  out.data_ptr<float>());
  } else if (dtype == at::kBFloat16) {
    preprocess_video_kernel<c10::BFloat16><<<grid, block, smem, stream>>>(
        src, g, sx, wx, sy, wy, nm, quantize, out.data_ptr<c10::BFloat16>());
  } else {
    preprocess_video_kernel<c10::Half><<<grid, block, smem, stream>>>(src, g, sx, wx, sy, wy, nm, quantize,
                                                                      out.data_ptr<c10::Half>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tempo_fast, CUDA, m) {
  m.impl("preprocess_video", &preprocess_video_cuda);
}

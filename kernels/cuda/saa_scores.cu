// saa_abs_diff_sums (CUDA): exact int64 sums of |f_t - f_{t-1}| over every element of each
// frame of uint8 frames [T, ...] on the GPU (any strides); the schema is defined with the CPU
// kernel in kernels/cpu/saa_scores.cpp.
//
// One block of kThreads threads per (pair t, tile of a frame), blocks of one pair consecutive,
// so frame t, read as "current" by pair t and as "previous" by pair t + 1 at about the same
// time, comes from L2 the second time. Within a block:
//   - contiguous frames whose frame stride and start are 16-byte aligned: each thread loads
//     kVectors uint4 (16 bytes) of both frames, all loads issued before any arithmetic, and
//     adds __vsadu4 of each 32-bit word (the SAD of 4 bytes); block 0 of a pair adds the
//     frame's last n % 16 bytes;
//   - any other layout: kElements elements per thread, the 3-dim index decomposed per element.
// Per-thread sums are 64-bit; a warp shuffle reduction, then one warp over the warp sums, then
// one atomicAdd per block into the pair's int64 (integer addition: order-independent, so the
// result is deterministic and equal to the CPU's).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "common/frame_layout.h"

namespace {

constexpr const char* kOp = "tempo_fast::saa_abs_diff_sums";
constexpr int kThreads = 256;
constexpr int kVectors = 4;    // uint4 per thread per frame: 16 KiB of a frame per block
constexpr int kElements = 16;  // elements per thread in the general path
constexpr int64_t kVectorTile = int64_t{kThreads} * kVectors;
constexpr int64_t kElementTile = int64_t{kThreads} * kElements;

__device__ __forceinline__ unsigned sad16(uint4 a, uint4 b) {
  return __vsadu4(a.x, b.x) + __vsadu4(a.y, b.y) + __vsadu4(a.z, b.z) + __vsadu4(a.w, b.w);
}

// Adds the block's per-thread values into *dst (one atomic per block).
__device__ __forceinline__ void block_add(unsigned long long value, unsigned long long* dst) {
  __shared__ unsigned long long warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kThreads / 32 ? warp_sums[lane] : 0;
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    if (lane == 0 && value != 0) atomicAdd(dst, value);
  }
}

__global__ void __launch_bounds__(kThreads) sad_vectorized(const uint8_t* __restrict__ base, int64_t stride_t,
                                                           int64_t n, int64_t tiles, unsigned long long* out) {
  const int64_t pair = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const uint8_t* cur = base + (pair + 1) * stride_t;
  const uint8_t* prev = cur - stride_t;
  const uint4* cur4 = reinterpret_cast<const uint4*>(cur);
  const uint4* prev4 = reinterpret_cast<const uint4*>(prev);
  const int64_t vectors = n / 16, first = tile * kVectorTile + threadIdx.x;
  uint4 a[kVectors], b[kVectors];
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    const int64_t i = first + int64_t{k} * kThreads;
    a[k] = i < vectors ? __ldg(cur4 + i) : make_uint4(0, 0, 0, 0);
    b[k] = i < vectors ? __ldg(prev4 + i) : make_uint4(0, 0, 0, 0);
  }
  unsigned acc = 0;  // at most 4 * 16 * 255 per thread
#pragma unroll
  for (int k = 0; k < kVectors; ++k) acc += sad16(a[k], b[k]);
  if (tile == 0) {
    for (int64_t i = vectors * 16 + threadIdx.x; i < n; i += kThreads) acc += abs(int(cur[i]) - int(prev[i]));
  }
  block_add(acc, out + pair);
}

__global__ void __launch_bounds__(kThreads) sad_strided(const uint8_t* __restrict__ base, int64_t stride_t,
                                                        tempo_fast::FrameLayout f, int64_t n, int64_t tiles,
                                                        unsigned long long* out) {
  const int64_t pair = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const uint8_t* cur = base + (pair + 1) * stride_t;
  unsigned long long acc = 0;
#pragma unroll 4
  for (int k = 0; k < kElements; ++k) {
    const int64_t e = tile * kElementTile + int64_t{k} * kThreads + threadIdx.x;
    if (e < n) {
      const int64_t i2 = e % f.size[2], rest = e / f.size[2];
      const int64_t offset = (rest / f.size[1]) * f.stride[0] + (rest % f.size[1]) * f.stride[1] + i2 * f.stride[2];
      acc += abs(int(__ldg(cur + offset)) - int(__ldg(cur + offset - stride_t)));
    }
  }
  block_add(acc, out + pair);
}

at::Tensor saa_abs_diff_sums_cuda(const at::Tensor& frames, int64_t isa) {
  TORCH_CHECK(frames.dim() == 4, kOp, ": frames must have 4 dims, got shape ", frames.sizes());
  TORCH_CHECK(frames.scalar_type() == at::kByte, kOp, ": frames must be uint8, got ", frames.scalar_type());
  TORCH_CHECK(frames.is_cuda(), kOp, ": this kernel runs CUDA tensors, got ", frames.device());
  const c10::cuda::CUDAGuard guard(frames.device());
  const int64_t count = frames.size(0), pairs = count > 1 ? count - 1 : 0;
  at::Tensor out = at::zeros({pairs}, frames.options().dtype(at::kLong));
  if (pairs == 0 || frames[0].numel() == 0) return out;

  const tempo_fast::FrameLayout f = tempo_fast::frame_layout(frames);
  const uint8_t* base = frames.data_ptr<uint8_t>();
  const int64_t stride_t = frames.stride(0), n = f.elements();
  auto* sums = reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TORCH_CHECK(pairs * ((n + kElementTile - 1) / kElementTile) < (int64_t{1} << 31), kOp, ": ", pairs,
              " frame pairs of ", n, " elements are more blocks than one launch takes");
  const bool aligned = reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride_t % 16 == 0;
  if (f.contiguous() && aligned) {
    const int64_t tiles = std::max<int64_t>(1, (n / 16 + kVectorTile - 1) / kVectorTile);
    sad_vectorized<<<dim3(static_cast<unsigned>(pairs * tiles)), kThreads, 0, stream>>>(base, stride_t, n, tiles, sums);
  } else {
    const int64_t tiles = (n + kElementTile - 1) / kElementTile;
    sad_strided<<<dim3(static_cast<unsigned>(pairs * tiles)), kThreads, 0, stream>>>(base, stride_t, f, n, tiles, sums);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return f.repeat == 1 ? out : out.mul_(f.repeat);
}

}  // namespace

TORCH_LIBRARY_IMPL(tempo_fast, CUDA, m) { m.impl("saa_abs_diff_sums", &saa_abs_diff_sums_cuda); }

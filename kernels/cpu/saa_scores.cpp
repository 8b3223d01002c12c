// saa_abs_diff_sums (CPU): exact int64 sums of |f_t - f_{t-1}| over every element of each
// frame of uint8 frames [T, ...] (any strides), t = 1..T-1. tempo_fast/ops/saa_scores.py turns
// them into scores with the division every backend shares.
//
//   torch.ops.tempo_fast.saa_abs_diff_sums(frames, isa=-1) -> int64 [max(T - 1, 0)]
//
// A frame is seen as rows of unit-stride elements where it can be (common/frame_layout.h);
// rows are summed with SAD instructions: _mm512_sad_epu8 (AVX-512BW, 64 bytes, masked tail)
// or _mm256_sad_epu8 (AVX2, 32 bytes), which add the |a - b| of 8 bytes into a 64-bit lane, so
// no sum can overflow; `isa` forces a level (0 scalar, 1 avx2, 2 avx512bw) for testing. Rows
// with a stride other than 1 take a scalar strided loop.
//
// Work split: a frame is cut into blocks of about kBlockBytes (row pieces), and the work items
// are (range of consecutive frames, block) pairs run by at::parallel_for. An item walks its
// frames in order over one block, so the previous frame's block is still in L2 when it is
// subtracted: every frame is read from memory about once. Partial sums [T-1, blocks] are added
// up at the end (integers: the result does not depend on the split).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/cpu_isa.h"
#include "common/frame_layout.h"

namespace {

constexpr const char* kOp = "tempo_fast::saa_abs_diff_sums";
constexpr int64_t kBlockBytes = 1 << 16;    // of one frame per work item (two frames stay in L2)
constexpr int64_t kItemsPerThread = 4;      // so that uneven items still balance
constexpr int64_t kSerialBytes = 1 << 20;   // below this, one thread: a pool costs more

using RowSad = int64_t (*)(const uint8_t*, const uint8_t*, int64_t);

int64_t sad_scalar(const uint8_t* a, const uint8_t* b, int64_t n) {
  // Pieces of at most 2**16 elements summed in uint32 (255 * 2**16 < 2**32).
  int64_t total = 0;
  for (int64_t start = 0; start < n; start += 1 << 16) {
    const int64_t end = std::min(n, start + (int64_t{1} << 16));
    uint32_t acc = 0;
    for (int64_t i = start; i < end; ++i) acc += static_cast<uint32_t>(std::abs(int(a[i]) - int(b[i])));
    total += acc;
  }
  return total;
}

int64_t sad_strided(const uint8_t* a, const uint8_t* b, int64_t n, int64_t step) {
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) total += std::abs(int(a[i * step]) - int(b[i * step]));
  return total;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) int64_t sad_avx2(const uint8_t* a, const uint8_t* b, int64_t n) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 32));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i + 32));
    acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(a0, b0));
    acc1 = _mm256_add_epi64(acc1, _mm256_sad_epu8(a1, b1));
  }
  if (i + 32 <= n) {
    acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)),
                                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i))));
    i += 32;
  }
  acc0 = _mm256_add_epi64(acc0, acc1);
  const __m128i half = _mm_add_epi64(_mm256_castsi256_si128(acc0), _mm256_extracti128_si256(acc0, 1));
  int64_t total = _mm_cvtsi128_si64(half) + _mm_extract_epi64(half, 1);
  for (; i < n; ++i) total += std::abs(int(a[i]) - int(b[i]));
  return total;
}

__attribute__((target("avx512f,avx512bw"))) int64_t sad_avx512(const uint8_t* a, const uint8_t* b, int64_t n) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    acc0 = _mm512_add_epi64(acc0, _mm512_sad_epu8(_mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i)));
    acc1 = _mm512_add_epi64(acc1, _mm512_sad_epu8(_mm512_loadu_si512(a + i + 64), _mm512_loadu_si512(b + i + 64)));
  }
  for (; i < n; i += 64) {  // at most two more, the last one masked (masked-off bytes read as 0)
    const __mmask64 mask = n - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (n - i)) - 1;
    acc0 = _mm512_add_epi64(acc0, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(mask, a + i),
                                                  _mm512_maskz_loadu_epi8(mask, b + i)));
  }
  int64_t lanes[8];
  _mm512_storeu_si512(lanes, _mm512_add_epi64(acc0, acc1));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#endif

RowSad row_sad(int64_t isa) {
#if defined(__x86_64__)
  if (isa == tempo_fast::kAvx512) return sad_avx512;
  if (isa == tempo_fast::kAvx2) return sad_avx2;
#endif
  return sad_scalar;
}

at::Tensor saa_abs_diff_sums_cpu(const at::Tensor& frames, int64_t isa) {
  TORCH_CHECK(frames.dim() == 4, kOp, ": frames must have 4 dims, got shape ", frames.sizes());
  TORCH_CHECK(frames.scalar_type() == at::kByte, kOp, ": frames must be uint8, got ", frames.scalar_type());
  TORCH_CHECK(frames.device().is_cpu(), kOp, ": this kernel runs CPU tensors, got ", frames.device());
  const int64_t level = tempo_fast::resolve_isa(isa, kOp);
  const int64_t count = frames.size(0), pairs = std::max<int64_t>(count - 1, 0);
  at::Tensor out = at::zeros({pairs}, frames.options().dtype(at::kLong));
  if (pairs == 0 || frames[0].numel() == 0) return out;

  const tempo_fast::FrameLayout f = tempo_fast::frame_layout(frames);
  const int64_t row = f.size[2];
  const int64_t pieces = (row + kBlockBytes - 1) / kBlockBytes;     // pieces per row
  const int64_t piece = std::min(row, kBlockBytes);
  const int64_t units = f.rows() * pieces;                          // row pieces per frame
  const int64_t units_per_block = std::max<int64_t>(1, kBlockBytes / piece);
  const int64_t blocks = (units + units_per_block - 1) / units_per_block;
  const int64_t wanted = kItemsPerThread * std::max<int64_t>(1, at::get_num_threads());
  const int64_t ranges = blocks >= wanted ? 1 : std::min(pairs, (wanted + blocks - 1) / blocks);
  const int64_t per_range = (pairs + ranges - 1) / ranges;
  const int64_t items = ((pairs + per_range - 1) / per_range) * blocks;
  std::vector<int64_t> partial(pairs * blocks, 0);

  const uint8_t* base = frames.data_ptr<uint8_t>();
  const int64_t stride_t = frames.stride(0);
  const RowSad sad = row_sad(level);
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t r = item / blocks, b = item % blocks;
      const int64_t u_first = b * units_per_block, u_last = std::min(units, u_first + units_per_block);
      for (int64_t t = 1 + r * per_range; t < std::min(count, 1 + (r + 1) * per_range); ++t) {
        int64_t total = 0;
        for (int64_t u = u_first; u < u_last; ++u) {
          const int64_t rr = u / pieces, k0 = (u % pieces) * kBlockBytes;
          const int64_t length = std::min(kBlockBytes, row - k0);
          const int64_t offset = (rr / f.size[1]) * f.stride[0] + (rr % f.size[1]) * f.stride[1] + k0 * f.stride[2];
          const uint8_t* cur = base + t * stride_t + offset;
          const uint8_t* prev = cur - stride_t;
          total += f.unit_stride_rows() ? sad(cur, prev, length) : sad_strided(cur, prev, length, f.stride[2]);
        }
        partial[(t - 1) * blocks + b] = total;
      }
    }
  };
  const bool serial = count * f.elements() < kSerialBytes;
  at::parallel_for(0, items, serial ? items : 1, run);

  int64_t* sums = out.data_ptr<int64_t>();
  for (int64_t p = 0; p < pairs; ++p) {
    int64_t total = 0;
    for (int64_t b = 0; b < blocks; ++b) total += partial[p * blocks + b];
    sums[p] = total * f.repeat;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tempo_fast, m) {
  m.def("saa_abs_diff_sums(Tensor frames, int isa=-1) -> Tensor");
}

TORCH_LIBRARY_IMPL(tempo_fast, CPU, m) { m.impl("saa_abs_diff_sums", &saa_abs_diff_sums_cpu); }

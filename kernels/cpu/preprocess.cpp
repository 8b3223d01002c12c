// Fused video preprocessing on the CPU: uint8 frames -> Qwen2-VL `pixel_values_videos`.
//
// tempo_fast::preprocess_video(frames, channels_last, height, width, temporal_patch_size,
//                              patch_size, merge_size, shift, scale, dtype, quantize, isa=-1)
//   frames  uint8 [T, C, H, W] (channels_last=false) or [T, H, W, C] (true), any strides
//   shift, scale  float32 [C]: output = (pixel - shift[c]) / scale[c] in float32, then `dtype`
//   quantize  must be true here (this is the uint8 path); isa  -1 best, 0 scalar, 1+ AVX2
//   returns [grid_t * gh * gw, C * tp * p * p] in dtype (float32, bfloat16 or float16), rows in
//   Qwen's patch order (see tempo_fast/video/preprocess.py); odd T repeats the last frame.
//
// The resize is bit-equal to torch's uint8 antialiased bicubic on the CPU (what torchvision and
// so transformers' processors run there), which is PIL's: per axis, weights of the a = -0.5 cubic
// stretched by the downscale factor, normalised in double, rounded to int16 at the largest
// precision that keeps the biggest weight under 2^15; the horizontal pass runs first and its
// result is rounded and clamped to uint8, then the vertical pass; an axis whose size does not
// change is not resampled. Each output sample is (sum w*x + 2^(prec-1)) >> prec, clamped to
// [0, 255]. Since a resized pixel is one of 256 values per channel, rescale + normalise + cast is
// a 256-entry table per channel, computed with the same float32 operations as torch.
//
// Work: (frame, band of output rows) items taken one at a time by at::parallel_for's threads.
// Each item packs the source rows its band needs (any strides) and runs the horizontal pass on
// them (AVX2: 4 taps of an RGB pixel row per multiply-add; scalar otherwise) into rows of packed
// uint8 pixels, then the vertical pass row by row (int32 accumulators over the whole row, an AVX2
// build chosen at run time), and writes each output row straight into its patches through the
// table: the output is written once (on huge pages where the kernel allows: advise_huge_pages).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "common/video_geometry.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/cpu_isa.h"

namespace {

// One axis of the resample: output i reads `count[i]` source samples from `first[i]` with int16
// weights `w[i * taps ...]` (zero-padded to `taps`), scaled by 2^precision.
struct Axis {
  int64_t taps = 0;
  int precision = 0;
  std::vector<int64_t> first, count;
  std::vector<int16_t> w;
};

// Keys' cubic with a = -0.5 (PIL's bicubic), in the evaluation order torch uses.
double cubic(double x) {
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

Axis make_axis(int64_t in_size, int64_t out_size) {
  Axis ax;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  ax.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  ax.first.resize(out_size);
  ax.count.resize(out_size);
  std::vector<double> wf(out_size * ax.taps, 0.0);
  double wt_max = 0.0;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = scale * (static_cast<double>(i) + 0.5);
    const int64_t xmin = std::max(static_cast<int64_t>(center - support + 0.5), int64_t(0));
    int64_t xsize = std::min(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
    xsize = std::clamp(xsize, int64_t(0), ax.taps);
    double* row = wf.data() + i * ax.taps;
    double total = 0.0;
    for (int64_t j = 0; j < xsize; ++j) {
      row[j] = cubic((static_cast<double>(j + xmin) - center + 0.5) * invscale);
      total += row[j];
    }
    if (total != 0.0) {
      for (int64_t j = 0; j < xsize; ++j) {
        row[j] /= total;
        wt_max = std::max(wt_max, row[j]);
      }
    }
    ax.first[i] = xmin;
    ax.count[i] = xsize;
  }
  int precision = 0;
  for (; precision < 22; ++precision) {
    if (static_cast<int>(0.5 + wt_max * (1 << (precision + 1))) >= (1 << 15)) break;
  }
  ax.precision = precision;
  ax.w.resize(wf.size());
  for (size_t k = 0; k < wf.size(); ++k) {
    const double v = wf[k] * (1 << precision);
    ax.w[k] = static_cast<int16_t>(v < 0 ? static_cast<int>(-0.5 + v) : static_cast<int>(0.5 + v));
  }
  return ax;
}

// Rows are packed RGB(A) bytes: pixel x of a row at [x * C, x * C + C); a source row is first
// copied into such a buffer (any strides in, `kRowPad` zero bytes after the last pixel, so the
// wide loads below may run past it).
constexpr int64_t kRowPad = 64;

inline uint8_t clamp_u8(int32_t acc, int precision) {
  const int32_t v = acc >> precision;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass, any C: dst[x * C + c] for x < out_w from the packed row `src`.
void hpass_scalar(const uint8_t* src, int64_t C, const Axis& ax, int64_t out_w, uint8_t* dst) {
  const int32_t half = 1 << (ax.precision - 1);
  for (int64_t x = 0; x < out_w; ++x) {
    const int16_t* w = ax.w.data() + x * ax.taps;
    const uint8_t* s = src + ax.first[x] * C;
    for (int64_t c = 0; c < C; ++c) {
      int32_t acc = half;
      for (int64_t k = 0; k < ax.count[x]; ++k) acc += w[k] * static_cast<int32_t>(s[k * C + c]);
      dst[x * C + c] = clamp_u8(acc, ax.precision);
    }
  }
}

// The horizontal weights of 3-channel rows laid out for hpass_rgb_avx2: per output x,
// ceil(count/4) groups of 16 int16, [w0 w1 w0 w1 w0 w1 0 0 | w2 w3 w2 w3 w2 w3 0 0].
struct RgbWeights {
  std::vector<int16_t> w;
  std::vector<int64_t> offset, groups;  // per output x: first group (in groups of 16), count
};

RgbWeights rgb_weights(const Axis& ax, int64_t out_w) {
  RgbWeights rw;
  rw.offset.resize(out_w);
  rw.groups.resize(out_w);
  int64_t total = 0;
  for (int64_t x = 0; x < out_w; ++x) {
    rw.offset[x] = total;
    rw.groups[x] = (ax.count[x] + 3) / 4;
    total += rw.groups[x];
  }
  rw.w.assign(total * 16, 0);
  for (int64_t x = 0; x < out_w; ++x) {
    for (int64_t k = 0; k < ax.count[x]; ++k) {
      const int64_t g = k / 4, lane = (k % 4) / 2, odd = k % 2;
      int16_t* dst = rw.w.data() + (rw.offset[x] + g) * 16 + lane * 8;
      for (int c = 0; c < 3; ++c) dst[2 * c + odd] = ax.w[x * ax.taps + k];
    }
  }
  return rw;
}

// Horizontal pass of a packed RGB row with AVX2: each group of 4 taps is one 16-byte load (4
// pixels), a byte shuffle into int16 pairs (R_k R_k+1 G_k G_k+1 B_k B_k+1, two taps per lane)
// and one multiply-add into 32-bit sums; the 4 bytes written per pixel overlap the next.
__attribute__((target("avx2"))) void hpass_rgb_avx2(
    const uint8_t* src, const RgbWeights& rw, const Axis& ax, int64_t out_w, uint8_t* dst) {
  const __m256i shuffle = _mm256_setr_epi8(
      0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
      6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
  const __m128i half = _mm_set1_epi32(1 << (ax.precision - 1));
  for (int64_t x = 0; x < out_w; ++x) {
    const uint8_t* s = src + ax.first[x] * 3;
    const int16_t* w = rw.w.data() + rw.offset[x] * 16;
    __m256i acc = _mm256_setzero_si256();
    for (int64_t g = 0; g < rw.groups[x]; ++g) {
      const __m128i px4 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 12 * g));
      const __m256i pairs = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(px4), shuffle);
      const __m256i wg = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16 * g));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, wg));
    }
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    sum = _mm_srai_epi32(_mm_add_epi32(sum, half), ax.precision);
    sum = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);
    const int32_t rgbx = _mm_cvtsi128_si32(sum);
    std::memcpy(dst + x * 3, &rgbx, 4);
  }
}

// Vertical pass for one output row: dst[i] for i < n_elems from rows[k * row_stride + i].
inline __attribute__((always_inline)) void vpass_body(
    const uint8_t* rows, int64_t row_stride, const int16_t* w, int64_t n, int precision,
    int64_t n_elems, int32_t* acc, uint8_t* dst) {
  const int32_t half = 1 << (precision - 1);
  for (int64_t i = 0; i < n_elems; ++i) acc[i] = half;
  for (int64_t k = 0; k < n; ++k) {
    const int32_t wk = w[k];
    const uint8_t* r = rows + k * row_stride;
    for (int64_t i = 0; i < n_elems; ++i) acc[i] += wk * static_cast<int32_t>(r[i]);
  }
  for (int64_t i = 0; i < n_elems; ++i) {
    const int32_t v = acc[i] >> precision;
    dst[i] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
  }
}

__attribute__((target("avx2"))) void vpass_avx2(
    const uint8_t* rows, int64_t row_stride, const int16_t* w, int64_t n, int precision,
    int64_t n_elems, int32_t* acc, uint8_t* dst) {
  vpass_body(rows, row_stride, w, n, precision, n_elems, acc, dst);
}

void vpass_scalar(const uint8_t* rows, int64_t row_stride, const int16_t* w, int64_t n,
                  int precision, int64_t n_elems, int32_t* acc, uint8_t* dst) {
  vpass_body(rows, row_stride, w, n, precision, n_elems, acc, dst);
}

// Ask for transparent huge pages on a large fresh output (advice only, errors ignored): with 4 KiB
// pages, first-touch faults of a 216 MB output cost about as much as the whole resize.
void advise_huge_pages(void* data, size_t bytes) {
#ifdef MADV_HUGEPAGE
  const uintptr_t huge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

// Sizes and strides of one call.
using Geometry = tempo_fast::VideoGeometry;

// Output row y of frame f: `vals` (packed pixels, C bytes each, w of them) looked up in `lut`
// ([C][256]) and written into every patch slot the row belongs to (the last frame also fills
// the temporal padding slots).
template <typename out_t>
void write_row(const Geometry& g, const out_t* lut, int64_t f, int64_t y, const uint8_t* vals,
               out_t* out) {
  const int64_t p = g.p, m = g.m, C = g.C, gw = g.w / p;
  const int64_t bh = (y / p) / m, mh = (y / p) % m, py = y % p;
  const int64_t patch = p * p, row_elems = C * g.tp * patch;
  const int64_t t = f / g.tp;
  const int64_t k_end = (f == g.T - 1) ? g.tp : f % g.tp + 1;  // pad with the last frame
  for (int64_t j = 0; j < gw; ++j) {
    const int64_t bw = j / m, mw = j % m;
    const int64_t rowi = (((t * (g.h / p / m) + bh) * (gw / m) + bw) * m + mh) * m + mw;
    out_t* base = out + rowi * row_elems + py * p;
    const uint8_t* v = vals + j * p * C;
    for (int64_t c = 0; c < C; ++c) {
      const out_t* table = lut + c * 256;
      out_t* dst = base + (c * g.tp + f % g.tp) * patch;
      for (int64_t x = 0; x < p; ++x) dst[x] = table[v[x * C + c]];
      for (int64_t k = f % g.tp + 1; k < k_end; ++k)
        std::memcpy(base + (c * g.tp + k) * patch, dst, p * sizeof(out_t));
    }
  }
}

// Source row r of frame `frame` packed into `dst` (C bytes per pixel).
void pack_row(const Geometry& g, const uint8_t* frame, int64_t r, uint8_t* dst) {
  const uint8_t* line = frame + r * g.sH;
  if (g.sC == 1 && g.sW == g.C) {
    std::memcpy(dst, line, g.W * g.C);
    return;
  }
  for (int64_t x = 0; x < g.W; ++x)
    for (int64_t c = 0; c < g.C; ++c) dst[x * g.C + c] = line[x * g.sW + c * g.sC];
}

template <typename out_t>
void run(const Geometry& g, const uint8_t* src, const float* shift, const float* scale,
         int64_t isa, out_t* out) {
  const bool do_h = g.w != g.W, do_v = g.h != g.H;
  const Axis ax_h = do_h ? make_axis(g.W, g.w) : Axis();
  const Axis ax_v = do_v ? make_axis(g.H, g.h) : Axis();
  const bool rgb_avx2 = do_h && g.C == 3 && isa >= tempo_fast::kAvx2;
  const RgbWeights rw = rgb_avx2 ? rgb_weights(ax_h, g.w) : RgbWeights();
  // rescale + normalise + cast of each of the 256 values, per channel (float32 ops as torch's)
  std::vector<out_t> lut(g.C * 256);
  for (int64_t c = 0; c < g.C; ++c)
    for (int v = 0; v < 256; ++v)
      lut[c * 256 + v] = static_cast<out_t>((static_cast<float>(v) - shift[c]) / scale[c]);

  const int64_t C = g.C, in_row = g.W * C, out_row = g.w * C;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t bands = std::min<int64_t>(g.h, std::max<int64_t>(1, (4 * threads + g.T - 1) / g.T));
  const int64_t band_rows = (g.h + bands - 1) / bands;
  // Items are handed out one by one (an atomic counter), not split up front: on a loaded machine
  // a descheduled thread then delays its current item only, not a fixed half of the work.
  const int64_t items = g.T * bands;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min(threads, items), 1, [&](int64_t, int64_t) {
    std::vector<uint8_t> line(in_row + kRowPad, 0), mid, row(out_row + kRowPad);
    std::vector<int32_t> acc(out_row);
    for (int64_t item; (item = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
      const int64_t f = item / bands, y0 = (item % bands) * band_rows;
      const int64_t y1 = std::min(g.h, y0 + band_rows);
      if (y0 >= y1) continue;
      int64_t r0 = y0, r1 = y1;  // the source rows this band reads
      if (do_v) {
        r0 = ax_v.first[y0];
        r1 = r0;
        for (int64_t y = y0; y < y1; ++y) r1 = std::max(r1, ax_v.first[y] + ax_v.count[y]);
      }
      // horizontal pass (or packing) of rows [r0, r1) into `mid`, out_row bytes apart
      mid.resize((r1 - r0) * out_row + kRowPad);
      const uint8_t* frame = src + f * g.sT;
      for (int64_t r = r0; r < r1; ++r) {
        uint8_t* dst = mid.data() + (r - r0) * out_row;
        if (!do_h) {
          pack_row(g, frame, r, dst);
          continue;
        }
        pack_row(g, frame, r, line.data());
        if (rgb_avx2) hpass_rgb_avx2(line.data(), rw, ax_h, g.w, dst);
        else hpass_scalar(line.data(), C, ax_h, g.w, dst);
      }
      for (int64_t y = y0; y < y1; ++y) {
        const uint8_t* vals = mid.data() + (y - r0) * out_row;
        if (do_v) {
          const uint8_t* rows = mid.data() + (ax_v.first[y] - r0) * out_row;
          const int16_t* w = ax_v.w.data() + y * ax_v.taps;
          if (isa >= tempo_fast::kAvx2)
            vpass_avx2(rows, out_row, w, ax_v.count[y], ax_v.precision, out_row, acc.data(), row.data());
          else
            vpass_scalar(rows, out_row, w, ax_v.count[y], ax_v.precision, out_row, acc.data(), row.data());
          vals = row.data();
        }
        write_row<out_t>(g, lut.data(), f, y, vals, out);
      }
    }
  });
}

at::Tensor preprocess_video_cpu(const at::Tensor& frames, bool channels_last, int64_t height,
                                int64_t width, int64_t temporal_patch_size, int64_t patch_size,
                                int64_t merge_size, const at::Tensor& shift,
                                const at::Tensor& scale, at::ScalarType dtype, bool quantize,
                                int64_t isa) {
  const Geometry g = tempo_fast::video_geometry(frames, channels_last, height, width, temporal_patch_size,
                                                patch_size, merge_size, shift, scale, dtype);
  TORCH_CHECK(quantize, "preprocess_video: the CPU kernel is torch's uint8 resize, which rounds "
              "to uint8 (quantize=True); use backend='torch' for unrounded floats");
  TORCH_CHECK(shift.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat,
              "preprocess_video: shift and scale must be float32, got ", shift.scalar_type(), " and ",
              scale.scalar_type());
  const int64_t level = tempo_fast::resolve_isa(isa, "preprocess_video");
  const at::Tensor sh = shift.contiguous().cpu(), sc = scale.contiguous().cpu();
  at::Tensor out = at::empty({g.grid_t() * (g.h / g.p) * (g.w / g.p), g.C * g.tp * g.p * g.p},
                             frames.options().dtype(dtype));
  advise_huge_pages(out.data_ptr(), out.nbytes());
  const uint8_t* src = frames.const_data_ptr<uint8_t>();
  const float* shp = sh.const_data_ptr<float>();
  const float* scp = sc.const_data_ptr<float>();
  if (dtype == at::kFloat) run<float>(g, src, shp, scp, level, out.data_ptr<float>());
  else if (dtype == at::kBFloat16) run<c10::BFloat16>(g, src, shp, scp, level, out.data_ptr<c10::BFloat16>());
  else run<c10::Half>(g, src, shp, scp, level, out.data_ptr<c10::Half>());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tempo_fast, m) {
  m.def("preprocess_video(Tensor frames, bool channels_last, int height, int width, "
        "int temporal_patch_size, int patch_size, int merge_size, Tensor shift, Tensor scale, "
        "ScalarType dtype, bool quantize, int isa=-1) -> Tensor");
}

TORCH_LIBRARY_IMPL(tempo_fast, CPU, m) {
  m.impl("preprocess_video", &preprocess_video_cpu);
}

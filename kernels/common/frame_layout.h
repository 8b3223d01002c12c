// A video frame (every dimension of a [T, ...] tensor but the first) seen as at most 3
// dimensions, for kernels that reduce over whole frames (the order of the elements does not
// matter to them):
//   - size-1 dimensions are dropped;
//   - stride-0 (expanded) dimensions are dropped and counted in `repeat`: a sum over the frame
//     is `repeat` times the sum over what is left;
//   - the rest is sorted by decreasing stride (the smallest last, for unit-stride rows) and
//     merged where contiguous; a contiguous frame becomes one row of size[2] elements.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace tempo_fast {

struct FrameLayout {
  int64_t size[3];    // size[0] x size[1] rows of size[2] elements
  int64_t stride[3];  // in elements; stride[2] is the smallest
  int64_t repeat;     // product of the dropped stride-0 dimensions

  int64_t elements() const { return size[0] * size[1] * size[2]; }
  int64_t rows() const { return size[0] * size[1]; }
  bool unit_stride_rows() const { return stride[2] == 1; }
  bool contiguous() const { return rows() == 1 && stride[2] == 1; }
};

inline FrameLayout frame_layout(const at::Tensor& frames) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (size, stride)
  int64_t repeat = 1;
  for (int64_t d = 1; d < frames.dim(); ++d) {
    const int64_t n = frames.size(d), st = frames.stride(d);
    if (n == 1) continue;
    if (st == 0) {
      repeat *= n;
      continue;
    }
    dims.emplace_back(n, st);
  }
  std::stable_sort(dims.begin(), dims.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (auto [n, st] : dims) {
    if (!merged.empty() && merged.back().second == st * n) {
      merged.back() = {merged.back().first * n, st};
    } else {
      merged.emplace_back(n, st);
    }
  }
  TORCH_CHECK(merged.size() <= 3, "frame_layout: a frame of more than 3 dimensions");
  FrameLayout layout{{1, 1, 1}, {1, 1, 1}, repeat};
  const size_t pad = 3 - merged.size();
  for (size_t i = 0; i < merged.size(); ++i) {
    layout.size[pad + i] = merged[i].first;
    layout.stride[pad + i] = merged[i].second;
  }
  return layout;
}

}  // namespace tempo_fast

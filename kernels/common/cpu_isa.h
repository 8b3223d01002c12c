// Run-time choice of the SIMD level for CPU kernels (kernels/README.md: SIMD).
//
// Kernels compile their wide variants with __attribute__((target("avx2"))) or
// __attribute__((target("avx512f,avx512bw"))) and pick one per call with
// resolve_isa(requested): -1 = the best this CPU has, or a level forced for testing
// (0 scalar, 1 avx2, 2 avx512bw), refused with a clear error where the CPU lacks it.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

namespace tempo_fast {

enum Isa : int64_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* isa_name(int64_t isa) {
  return isa == kAvx512 ? "avx512bw" : isa == kAvx2 ? "avx2" : "scalar";
}

inline int64_t detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return kAvx512;
  if (__builtin_cpu_supports("avx2")) return kAvx2;
#endif
  return kScalar;
}

inline int64_t best_isa() {
  static const int64_t isa = detect_isa();
  return isa;
}

// The level a kernel runs at: `requested` = -1 (best available) or a level to force.
inline int64_t resolve_isa(int64_t requested, const char* op) {
  TORCH_CHECK(requested >= -1 && requested <= kAvx512, op, ": isa must be -1 (auto), 0 (scalar), ",
              "1 (avx2) or 2 (avx512bw), got ", requested);
  if (requested == -1) return best_isa();
  TORCH_CHECK(requested <= best_isa(), op, ": isa=", requested, " (", isa_name(requested),
              ") is not supported by this CPU, which has up to ", isa_name(best_isa()));
  return requested;
}

}  // namespace tempo_fast

// Always-inline 8-float vector helpers and the function multi-versioning macro, for the kernels of
// simd_kernels.cc only: no other file includes this header, so no 32-byte vector crosses a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/sampling/simd_kernels.h"

// The O(vocab) kernels use GCC/Clang vector extensions (8 floats; two SSE registers or one AVX
// register) and, on x86-64 Linux, are compiled twice, for AVX2 and for the baseline, and picked
// at load time (function multi-versioning). No FMA in either: both versions round identically,
// so the tokens of a seeded run do not depend on which version the CPU gets.
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
// Clang (used for the fuzz builds) refuses 32-byte vector arguments in the baseline clone even
// for always-inline helpers, so its builds take the AVX2 version only and need an AVX2 CPU.
#define MODRWKV_VECTOR_CLONES __attribute__((target("avx2")))
#elif defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(__SANITIZE_THREAD__)
// (Not under ThreadSanitizer: target_clones resolves through an ifunc that runs before the TSan
// runtime is up and crashes the process at load.)
#define MODRWKV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MODRWKV_VECTOR_CLONES
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define MODRWKV_ALWAYS_INLINE inline __attribute__((always_inline, target("avx2")))
#else
#define MODRWKV_ALWAYS_INLINE inline __attribute__((always_inline))
#endif
#if defined(__GNUC__) && !defined(__clang__)
// The 32-byte vector helpers are always inlined, so no vector is ever passed by value across a
// call and GCC's "AVX vector return without AVX changes the ABI" note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace modrwkv::sampling_internal {

using F8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));
inline constexpr size_t kW = 8;  // floats per F8
static_assert(kBlock % kW == 0 && kSkipChunk == 4 * kW);

MODRWKV_ALWAYS_INLINE F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
MODRWKV_ALWAYS_INLINE void Store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }
MODRWKV_ALWAYS_INLINE F8 Splat(float x) { return F8{} + x; }
MODRWKV_ALWAYS_INLINE F8 Select8(I8 mask, F8 a, F8 b) {
  return reinterpret_cast<F8>((reinterpret_cast<I8>(a) & mask) | (reinterpret_cast<I8>(b) & ~mask));
}
MODRWKV_ALWAYS_INLINE bool AnyLane(I8 mask) {
  uint64_t w[4];
  std::memcpy(w, &mask, sizeof(w));
  return (w[0] | w[1] | w[2] | w[3]) != 0;
}

// 2^y for y <= 0, lane by lane as Exp2NonPositive (simd_kernels.h), with the same bits.
MODRWKV_ALWAYS_INLINE F8 Exp2x8(F8 y) {
  const I8 in_range = y >= Splat(kExp2Min);  // false for NaN
  const F8 yc = Select8(in_range, y, Splat(kExp2Min));
  const F8 n = (yc + 12582912.0f) - 12582912.0f;  // round to nearest integer
  const F8 f = yc - n;
  F8 p = Splat(kExp2C[0]);
  for (int k = 1; k < 6; ++k) p = p * f + kExp2C[k];
  p = p * f + 1.0f;
  const F8 scale = reinterpret_cast<F8>((__builtin_convertvector(n, I8) + 127) << 23);  // 2^n
  return Select8(in_range, p * scale, F8{});
}

}  // namespace modrwkv::sampling_internal

// What the x86 SIMD kernel files (kernels_x86.cc, gemm_x86.cc, sparse_i4_x86.cc) share, and only
// they include: the target attributes their functions carry (instead of the files being
// compiled with -mavx512f, so that no AVX-512 instruction can leak into code that runs on older
// CPUs), and the warnings their intrinsics need off.
#pragma once

#if defined(__x86_64__)

#include <immintrin.h>

// Vectors returned by value from always-inlined helpers: the ABI note is moot.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 flags the deliberately undefined lanes inside its own reduce/convert intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // (a GCC-only warning)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define MODRWKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define MODRWKV_AVX2 __attribute__((target("avx2,fma")))
// AVX-512 with VNNI (vpdpbusd): dispatched only where the CPU has it.
#define MODRWKV_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))

#endif  // __x86_64__

// Entry points of the x86 SIMD kernels (engine/cpu/kernels_x86.cc); only the dispatcher uses them.
#pragma once

#include <cstdint>

#include "engine/cpu/kernels.h"

namespace modrwkv::cpu {
namespace avx512 {
void Gemv(WType wt, const void* w, const float* row_scale, int64_t ldw, int in, int o0, int o1,
          const float* x, int64_t ldx, int nb, float* y, int64_t ldy, bool accumulate);
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy);
float SumFloats(const float* x, int64_t n);
void Bf16ToF32(const uint16_t* src, int64_t n, float* dst);
void I8ToF32(const int8_t* src, int64_t n, float scale, float* dst);
}  // namespace avx512
namespace avx2 {
void Gemv(WType wt, const void* w, const float* row_scale, int64_t ldw, int in, int o0, int o1,
          const float* x, int64_t ldx, int nb, float* y, int64_t ldy, bool accumulate);
}  // namespace avx2
}  // namespace modrwkv::cpu

// Entry points of the x86 SIMD kernels (engine/cpu/kernels_x86.cc, gemm_x86.cc,
// sparse_i4_x86.cc); only the dispatcher uses them.
#pragma once

#include <cstdint>

#include "engine/cpu/kernels.h"

namespace modrwkv::cpu {
namespace avx512 {
// AVX-512 VNNI (vpdpbusd): dispatched only where the CPU has it.
// I4Gemm (wt kI4, col_scale unused) or I8DotGemm (wt kI8); xi may be null.
void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* xi);
void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc);
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate);
void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc);
void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq, float* xscale,
                    int32_t* xsum);
int64_t IntegerDotPeakLoop(int64_t steps);  // VNNI
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);
void VecReluSquare(float* x, int64_t n);
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy);
float SumFloats(const float* x, int64_t n, bool prefetch);
void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out);
}  // namespace avx512
namespace avx2 {
int64_t IntegerDotPeakLoop(int64_t steps);
// I4Gemm (wt kI4, col_scale unused) or I8DotGemm (wt kI8).
void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* xi);
void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc);
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate);
void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc);
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);
void VecReluSquare(float* x, int64_t n);
}  // namespace avx2
}  // namespace modrwkv::cpu

// CPU kernels of the RWKV7 forward pass. Each has a portable scalar version (the test oracle)
// and SIMD versions picked once at start-up from the CPU's features (AVX-512, AVX2).
#pragma once

#include <cstdint>
#include <string>

namespace modrwkv::cpu {

// Matrix weights, stored [out, in] row-major: f32, bf16 (upper half of an f32), or int8 with one
// f32 scale per output row (w = q * scale[row]).
enum class WType { kF32, kBF16, kI8 };

// y[b*ldy + o] (=|+=) s_o * sum_i W[o*ldw + i] * x[b*ldx + i]   for o in [o0, o1), b in [0, nb),
// where s_o = row_scale[o] for kI8 (row_scale is indexed by absolute row) and 1 otherwise.
// nb <= kMaxGemvRows: every weight row is read once for all nb inputs (decode is bound by
// reading weights, so this is the decode kernel).
constexpr int kMaxGemvRows = 4;
void Gemv(WType wt, const void* w, const float* row_scale, int64_t ldw, int in, int o0, int o1,
          const float* x, int64_t ldx, int nb, float* y, int64_t ldy, bool accumulate);

// In-place element-wise functions over n floats.
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);

// One head of the WKV7 recurrence over T tokens of one sequence.
//   state: [64 value i][64 key j] f32, updated in place.
//   r, w, k, v, kk, a: row t at ptr + t*ld (64 values each); w is the decay in (0, 1).
//   y: row t at y + t*ldy.
// Per token:  sa_i = sum_j S[i][j] * (-kk_j);  S[i][j] = S[i][j]*w_j + sa_i*kk_j*a_j + v_i*k_j;
//             y_i = sum_j S[i][j] * r_j.
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy);

// Sum of n floats with several independent accumulators: the memory-read benchmark's kernel.
float SumFloats(const float* x, int64_t n);

// Widens n bf16 values to f32.
void Bf16ToF32(const uint16_t* src, int64_t n, float* dst);
// Widens n int8 values to f32, times `scale`.
void I8ToF32(const int8_t* src, int64_t n, float scale, float* dst);

// Row-wise LayerNorm (eps inside the square root).
void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out);

// Which implementation the dispatcher picked: "avx512", "avx2" or "scalar".
std::string KernelIsa();

// Forces an implementation for tests ("avx512", "avx2", "scalar"); returns false if the CPU
// lacks it. Not thread-safe: call before any kernel runs.
bool ForceKernelIsa(const std::string& isa);

namespace scalar {
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
}  // namespace scalar

}  // namespace modrwkv::cpu

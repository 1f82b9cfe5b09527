// Portable reference kernels: the oracle the SIMD versions are tested against.
#include <cmath>
#include <cstring>

#include "engine/cpu/kernels.h"

namespace modrwkv::cpu::scalar {
namespace {

inline float LoadW(WType wt, const void* w, int64_t idx) {
  if (wt == WType::kF32) return static_cast<const float*>(w)[idx];
  if (wt == WType::kI8) return static_cast<float>(static_cast<const int8_t*>(w)[idx]);
  const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(w)[idx]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

void Gemv(WType wt, const void* w, const float* row_scale, int64_t ldw, int in, int o0, int o1,
          const float* x, int64_t ldx, int nb, float* y, int64_t ldy, bool accumulate) {
  for (int o = o0; o < o1; ++o) {
    for (int b = 0; b < nb; ++b) {
      float s = 0;
      for (int i = 0; i < in; ++i) s += LoadW(wt, w, o * ldw + i) * x[b * ldx + i];
      if (wt == WType::kI8) s *= row_scale[o];
      float& out = y[b * ldy + o];
      out = accumulate ? out + s : s;
    }
  }
}

void VecExp(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

void VecSigmoid(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void VecTanh(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy) {
  constexpr int N = 64;
  for (int t = 0; t < T; ++t) {
    const float* rt = r + t * ld;
    const float* wt = w + t * ld;
    const float* kt = k + t * ld;
    const float* vt = v + t * ld;
    const float* kkt = kk + t * ld;
    const float* at = a + t * ld;
    float* yt = y + t * ldy;
    for (int i = 0; i < N; ++i) {
      float* s = state + i * N;
      float sa = 0;
      for (int j = 0; j < N; ++j) sa -= s[j] * kkt[j];
      float acc = 0;
      for (int j = 0; j < N; ++j) {
        s[j] = s[j] * wt[j] + sa * (kkt[j] * at[j]) + vt[i] * kt[j];
        acc += s[j] * rt[j];
      }
      yt[i] = acc;
    }
  }
}

float SumFloats(const float* x, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += x[i + j];
  for (; i < n; ++i) s[0] += x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void Bf16ToF32(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = LoadW(WType::kBF16, src, i);
}

void I8ToF32(const int8_t* src, int64_t n, float scale, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]) * scale;
}

}  // namespace modrwkv::cpu::scalar

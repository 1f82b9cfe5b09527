// Picks the kernel implementations for this CPU once, and holds the ones with no SIMD variant.
#include "engine/cpu/kernels.h"

#include <cmath>

#include "engine/cpu/kernels_x86.h"

namespace modrwkv::cpu {
namespace {

struct Dispatch {
  std::string isa = "scalar";
  decltype(&scalar::Gemv) gemv = scalar::Gemv;
  decltype(&scalar::VecExp) exp = scalar::VecExp;
  decltype(&scalar::VecSigmoid) sigmoid = scalar::VecSigmoid;
  decltype(&scalar::VecTanh) tanh = scalar::VecTanh;
  decltype(&scalar::WkvHead) wkv = scalar::WkvHead;
  decltype(&scalar::SumFloats) sum = scalar::SumFloats;
  decltype(&scalar::Bf16ToF32) bf16 = scalar::Bf16ToF32;
  decltype(&scalar::I8ToF32) i8 = scalar::I8ToF32;
};

bool CpuHas(const std::string& isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (isa == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == "scalar";
}

Dispatch Make(const std::string& isa) {
  Dispatch d;
#if defined(__x86_64__)
  if (isa == "avx512") {
    d = {"avx512",        avx512::Gemv,      avx512::VecExp,    avx512::VecSigmoid, avx512::VecTanh,
         avx512::WkvHead, avx512::SumFloats, avx512::Bf16ToF32, avx512::I8ToF32};
  } else if (isa == "avx2") {
    d.isa = "avx2";
    d.gemv = avx2::Gemv;
  }
#endif
  return d;
}

Dispatch& Active() {
  static Dispatch d = Make(CpuHas("avx512") ? "avx512" : CpuHas("avx2") ? "avx2" : "scalar");
  return d;
}

}  // namespace

std::string KernelIsa() { return Active().isa; }

bool ForceKernelIsa(const std::string& isa) {
  if (!CpuHas(isa)) return false;
  Active() = Make(isa);
  return true;
}

void Gemv(WType wt, const void* w, const float* row_scale, int64_t ldw, int in, int o0, int o1,
          const float* x, int64_t ldx, int nb, float* y, int64_t ldy, bool accumulate) {
  Active().gemv(wt, w, row_scale, ldw, in, o0, o1, x, ldx, nb, y, ldy, accumulate);
}
void VecExp(float* x, int64_t n) { Active().exp(x, n); }
void VecSigmoid(float* x, int64_t n) { Active().sigmoid(x, n); }
void VecTanh(float* x, int64_t n) { Active().tanh(x, n); }
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy) {
  Active().wkv(state, T, r, w, k, v, kk, a, ld, y, ldy);
}

float SumFloats(const float* x, int64_t n) { return Active().sum(x, n); }
void Bf16ToF32(const uint16_t* src, int64_t n, float* dst) { Active().bf16(src, n, dst); }
void I8ToF32(const int8_t* src, int64_t n, float scale, float* dst) {
  Active().i8(src, n, scale, dst);
}

void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out) {
  float mean = 0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  float var = 0;
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    var += d * d;
  }
  var /= static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(var + eps);
  for (int i = 0; i < n; ++i) out[i] = (x[i] - mean) * inv * weight[i] + bias[i];
}

}  // namespace modrwkv::cpu

// Picks the kernel implementations for this CPU once, and holds the ones with no SIMD variant.
#include "engine/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/cpu/kernels_x86.h"

namespace modrwkv::cpu {
namespace {

struct Dispatch {
  std::string isa = "scalar";
  void (*gemm)(WType, const void*, const float*, int, int, PanelGeometry, int, int, const float*,
               int, float*, int64_t, bool) = scalar::PanelGemm;
  decltype(&scalar::SparseRowsGemm) sparse_gemm = scalar::SparseRowsGemm;
  decltype(&scalar::IntegerGemm) integer_gemm = scalar::IntegerGemm;
  decltype(&scalar::SparseI4Gemm) sparse_i4_gemm = scalar::SparseI4Gemm;
  decltype(&scalar::QuantizeRowsI4) quantize_i4 = scalar::QuantizeRowsI4;
  decltype(&scalar::IntegerDotPeakLoop) int_dot_peak = scalar::IntegerDotPeakLoop;
  decltype(&scalar::VecExp) exp = scalar::VecExp;
  decltype(&scalar::VecSigmoid) sigmoid = scalar::VecSigmoid;
  decltype(&scalar::VecTanh) tanh = scalar::VecTanh;
  decltype(&scalar::VecReluSquare) relu_square = scalar::VecReluSquare;
  decltype(&scalar::WkvHead) wkv = scalar::WkvHead;
  decltype(&scalar::SumFloats) sum = scalar::SumFloats;
  decltype(&scalar::LayerNorm) layer_norm = scalar::LayerNorm;
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
  if (isa == "avx512vnni") return CpuHas("avx512") && __builtin_cpu_supports("avx512vnni");
#endif
  return isa == "scalar";
}

Dispatch Make(const std::string& isa) {
  Dispatch d;
#if defined(__x86_64__)
  if (isa == "avx512") {
    d.isa = "avx512";
    d.gemm = avx512::PanelGemm;
    d.sparse_gemm = avx512::SparseRowsGemm;
    // Without VNNI (Skylake-X) the AVX2 kernel's multiply-adds give the same sums.
    d.integer_gemm = CpuHas("avx512vnni") ? avx512::IntegerGemm : avx2::IntegerGemm;
    d.sparse_i4_gemm = CpuHas("avx512vnni") ? avx512::SparseI4Gemm : avx2::SparseI4Gemm;
    d.quantize_i4 = avx512::QuantizeRowsI4;
    d.int_dot_peak = CpuHas("avx512vnni") ? avx512::IntegerDotPeakLoop : avx2::IntegerDotPeakLoop;
    d.exp = avx512::VecExp;
    d.sigmoid = avx512::VecSigmoid;
    d.tanh = avx512::VecTanh;
    d.relu_square = avx512::VecReluSquare;
    d.wkv = avx512::WkvHead;
    d.sum = avx512::SumFloats;
    d.layer_norm = avx512::LayerNorm;
  } else if (isa == "avx2") {
    d.isa = "avx2";
    d.gemm = avx2::PanelGemm;
    d.sparse_gemm = avx2::SparseRowsGemm;
    d.integer_gemm = avx2::IntegerGemm;
    d.sparse_i4_gemm = avx2::SparseI4Gemm;
    d.int_dot_peak = avx2::IntegerDotPeakLoop;
    d.exp = avx2::VecExp;
    d.sigmoid = avx2::VecSigmoid;
    d.tanh = avx2::VecTanh;
    d.relu_square = avx2::VecReluSquare;
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

void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
               const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  Active().gemm(wt, w, col_scale, in, out, PanelGeometry::Packed(in), p0, p1, xp, rows, y, ldy,
                accumulate);
}
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  Active().gemm(wt, w, col_scale, in, out, g, p0, p1, xp, rows, y, ldy, accumulate);
}
void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc) {
  Active().sparse_gemm(wt, w, col_scale, out, ld, p0, p1, x, ldx, rows, nonzero, n, y, ldy,
                       accumulate, acc);
}

void I4Gemm(const void* w, int in, int out, int p0, int p1, const int8_t* xq, const float* xscale,
            const int32_t* xsum, int rows, float* y, int64_t ldy, bool accumulate,
            const int32_t* xi) {
  Active().integer_gemm(WType::kI4, w, nullptr, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy,
                        accumulate, xi);
}

void I8DotGemm(const void* w, const float* col_scale, int in, int out, int p0, int p1,
               const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
               int64_t ldy, bool accumulate, const int32_t* xi) {
  Active().integer_gemm(WType::kI8, w, col_scale, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy,
                        accumulate, xi);
}

void InterleaveRowsI4(const int8_t* xq, int rows, int in, int32_t* xi) {
  const int64_t steps = InterleavedRowsI4Words(1, in), ldq = steps * 4;
  for (int t = 0, r = 0; t < RowTiles(rows); r += RowTileSize(rows, t), ++t) {
    const int mr = RowTileSize(rows, t);
    int32_t* dst = xi + r * steps;
    const int8_t* src = xq + r * ldq;
    for (int64_t j = 0; j < steps; ++j) {
      for (int b = 0; b < mr; ++b) std::memcpy(&dst[j * mr + b], src + b * ldq + 4 * j, 4);
    }
  }
}

void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc) {
  Active().sparse_i4_gemm(w, in, out, k0, k1, xq, xscale, xsum, rows, nonzero, n, y, ldy,
                          accumulate, acc);
}

void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq, float* xscale,
                    int32_t* xsum) {
  Active().quantize_i4(x, ldx, rows, in, xq, xscale, xsum);
}

void PackRows(const float* x, int64_t ldx, int rows, int in, float* xp) {
  for (int t = 0, r = 0; t < RowTiles(rows); ++t) {
    const int mr = RowTileSize(rows, t);
    for (int i = 0; i < in; ++i)
      for (int b = 0; b < mr; ++b) xp[static_cast<int64_t>(i) * mr + b] = x[(r + b) * ldx + i];
    xp += static_cast<int64_t>(mr) * in;
    r += mr;
  }
}
void VecExp(float* x, int64_t n) { Active().exp(x, n); }
void VecSigmoid(float* x, int64_t n) { Active().sigmoid(x, n); }
void VecTanh(float* x, int64_t n) { Active().tanh(x, n); }
void VecReluSquare(float* x, int64_t n) { Active().relu_square(x, n); }
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy) {
  Active().wkv(state, T, r, w, k, v, kk, a, ld, y, ldy);
}

float SumFloats(const float* x, int64_t n, bool prefetch) { return Active().sum(x, n, prefetch); }
int64_t IntegerDotPeakLoop(int64_t steps) { return Active().int_dot_peak(steps); }

void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out) {
  Active().layer_norm(x, weight, bias, n, eps, out);
}

}  // namespace modrwkv::cpu

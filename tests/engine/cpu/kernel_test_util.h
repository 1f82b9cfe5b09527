// Inputs and matrices shared by the kernel and LinearRunner tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/linear.h"

namespace modrwkv::cpu::testing_kernels {

inline std::vector<float> Random(size_t n, uint32_t seed, float lo = -1, float hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// x for the sparse products: about 60% zeros, row 1 entirely zero, and every third input zero in
// every row (so some inputs are skipped whatever the row count).
inline std::vector<float> MostlyZero(int rows, int in, uint32_t seed) {
  std::vector<float> x = Random(static_cast<size_t>(rows) * in, seed);
  std::mt19937 g(seed + 1);
  for (int b = 0; b < rows; ++b) {
    for (int i = 0; i < in; ++i) {
      if (b == 1 || i % 3 == 0 || g() % 10 < 6) x[static_cast<size_t>(b) * in + i] = 0.0f;
    }
  }
  return x;
}

inline Matrix MatrixOf(const std::vector<float>& w, int out, int in, WType wt, Layout layout) {
  const TensorView view{"w", DType::kF32, {out, in}, w.data(), w.size() * 4};
  return MakeMatrix(view, false, wt, layout);
}

// Inputs of x as I4Gemm takes them (QuantizeRowsI4), and the ones nonzero in some of its first
// `rows` rows (what SparseI4Gemm reads).
struct RoundedX {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> sum;
  RoundedX(const std::vector<float>& x, int rows, int in) {
    const int groups = (in + kI4Group - 1) / kI4Group;
    q.resize(static_cast<size_t>(rows) * groups * kI4Group);
    scale.resize(static_cast<size_t>(rows) * groups);
    sum.resize(scale.size());
    QuantizeRowsI4(x.data(), in, rows, in, q.data(), scale.data(), sum.data());
  }
  std::vector<int32_t> Nonzero(int rows, int in) const {
    const int64_t ldq = int64_t{(in + kI4Group - 1) / kI4Group} * kI4Group;
    std::vector<int32_t> nz;
    for (int i = 0; i < in; ++i) {
      bool any = false;
      for (int b = 0; b < rows; ++b) any |= q[b * ldq + i] != 0;
      if (any) nz.push_back(i);
    }
    return nz;
  }
};

}  // namespace modrwkv::cpu::testing_kernels

// The per-element arithmetic of the CUDA kernels (engine/cuda/rwkv7_math.h), compiled here as
// plain C++ and checked against the CPU backend's scalar kernels and its formulas: runs on every
// machine, so the GPU ops' math is tested where no GPU is.
#include "engine/cuda/rwkv7_math.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/cpu/kernels.h"
#include "gtest/gtest.h"

namespace modrwkv::cuda::math {
namespace {

std::vector<float> Random(int n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(Rwkv7MathTest, ActivationsMatchTheCpuScalarKernels) {
  std::vector<float> x = Random(4096, 1, 4.0f);
  std::vector<float> sig = x, relu = x, decay = x;
  cpu::scalar::VecSigmoid(sig.data(), sig.size());
  cpu::scalar::VecReluSquare(relu.data(), relu.size());
  // The CPU's decay: sigmoid, times -e^-0.5, exp.
  cpu::scalar::VecSigmoid(decay.data(), decay.size());
  for (float& d : decay) d *= kDecayScale;
  cpu::scalar::VecExp(decay.data(), decay.size());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(Sigmoid(x[i]), sig[i], 1e-6f) << x[i];
    EXPECT_FLOAT_EQ(ReluSquare(x[i]), relu[i]) << x[i];
    EXPECT_NEAR(Decay(x[i]), decay[i], 1e-6f) << x[i];
    EXPECT_GT(Decay(x[i]), 0.545f);
    EXPECT_LE(Decay(x[i]), 1.0f);  // 1 in float for a very negative input
  }
}

TEST(Rwkv7MathTest, LayerNormScaleMatchesTheCpuLayerNorm) {
  const int n = 64;
  const std::vector<float> x = Random(n, 2, 3.0f), w = Random(n, 3, 1.0f), b = Random(n, 4, 1.0f);
  std::vector<float> want(n);
  cpu::scalar::LayerNorm(x.data(), w.data(), b.data(), n, kGroupNormEps, want.data());
  float mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= n;
  for (float v : x) var += (v - mean) * (v - mean);
  const float inv = InvStd(var / n, kGroupNormEps);
  for (int i = 0; i < n; ++i) EXPECT_NEAR((x[i] - mean) * inv * w[i] + b[i], want[i], 1e-5f);
}

TEST(Rwkv7MathTest, TheRestFollowTheCpuBackendsFormulas) {
  // As written in engine/cpu/cpu_model.cc's RunLayer.
  EXPECT_FLOAT_EQ(TokenShift(2.0f, 5.0f, 0.25f), 2.0f + (5.0f - 2.0f) * 0.25f);
  EXPECT_FLOAT_EQ(KeyWithIclr(3.0f, 0.2f, 0.5f), 3.0f * (1.0f + (0.2f - 1.0f) * 0.5f));
  EXPECT_FLOAT_EQ(ValueResidual(1.0f, 3.0f, 0.0f), 1.0f + (3.0f - 1.0f) * 0.5f);
  EXPECT_FLOAT_EQ(GatedOutput(0.5f, 2.0f, 3.0f, 0.1f), (0.5f + 2.0f * 3.0f) * 0.1f);
  EXPECT_FLOAT_EQ(InvL2(4.0f), 0.5f);
  EXPECT_FLOAT_EQ(InvL2(0.0f), 1.0f / kNormEps);  // a zero head stays zero, no NaN
}

}  // namespace
}  // namespace modrwkv::cuda::math

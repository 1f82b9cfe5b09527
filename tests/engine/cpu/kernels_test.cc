// SIMD kernels against their scalar twins.
#include "engine/cpu/kernels.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "gtest/gtest.h"

namespace modrwkv::cpu {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1, float hi = 1) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

class KernelIsaTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!ForceKernelIsa(GetParam())) GTEST_SKIP() << "CPU lacks " << GetParam();
  }
  void TearDown() override {
    // Back to the best the CPU offers.
    ForceKernelIsa("avx512") || ForceKernelIsa("avx2") || ForceKernelIsa("scalar");
  }
};

TEST_P(KernelIsaTest, GemvMatchesScalarForAllBatchSizesAndTails) {
  for (int in : {16, 64, 77, 768}) {
    for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
      const int out = 37;
      std::vector<float> wf = Random(static_cast<size_t>(out) * in, 1);
      std::vector<uint16_t> wb(wf.size());
      std::vector<int8_t> wq(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) {
        wb[i] = F32ToBF16(wf[i]);
        wq[i] = static_cast<int8_t>(static_cast<int>(i * 7919 % 255) - 127);
      }
      std::vector<float> scale = Random(out, 13, 0.001f, 0.1f);
      const void* w = wt == WType::kF32    ? static_cast<const void*>(wf.data())
                      : wt == WType::kBF16 ? static_cast<const void*>(wb.data())
                                           : static_cast<const void*>(wq.data());
      std::vector<float> x = Random(static_cast<size_t>(kMaxGemvRows) * in, 2);
      for (int nb = 1; nb <= kMaxGemvRows; ++nb) {
        for (bool acc : {false, true}) {
          std::vector<float> y = Random(static_cast<size_t>(nb) * out, 3);
          std::vector<float> ref = y;
          Gemv(wt, w, scale.data(), in, in, 3, out, x.data(), in, nb, y.data(), out, acc);
          scalar::Gemv(wt, w, scale.data(), in, in, 3, out, x.data(), in, nb, ref.data(), out, acc);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_NEAR(y[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(in)))
                << "in=" << in << " nb=" << nb << " i=" << i;
          }
          // Rows before o0 are untouched.
          std::vector<float> y0 = Random(static_cast<size_t>(nb) * out, 3);
          EXPECT_EQ(y[0], y0[0]);
        }
      }
    }
  }
}

TEST_P(KernelIsaTest, ElementwiseMatchLibm) {
  std::vector<float> x = Random(1003, 4, -30, 30);
  x.push_back(0.0f);
  x.push_back(1e-6f);
  x.push_back(-1e-5f);
  x.push_back(88.0f);
  x.push_back(-90.0f);
  std::vector<float> e = x, s = x, t = x;
  VecExp(e.data(), static_cast<int64_t>(e.size()));
  VecSigmoid(s.data(), static_cast<int64_t>(s.size()));
  VecTanh(t.data(), static_cast<int64_t>(t.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double xe = std::exp(static_cast<double>(x[i]));
    EXPECT_NEAR(e[i], xe, 3e-7 * xe + 1e-38) << x[i];
    EXPECT_NEAR(s[i], 1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))), 2e-7) << x[i];
    const double th = std::tanh(static_cast<double>(x[i]));
    EXPECT_NEAR(t[i], th, 2e-7 + 1e-6 * std::abs(th)) << x[i];
  }
}

TEST_P(KernelIsaTest, WkvMatchesScalar) {
  const int T = 5, ld = 128;
  std::vector<float> r = Random(T * ld, 5), k = Random(T * ld, 6), v = Random(T * ld, 7);
  std::vector<float> w = Random(T * ld, 8, 0.5f, 1.0f), a = Random(T * ld, 9, 0, 1);
  std::vector<float> kk = Random(T * ld, 10);
  std::vector<float> s1 = Random(64 * 64, 11), s2 = s1;
  std::vector<float> y1(T * ld, 0), y2(T * ld, 0);
  WkvHead(s1.data(), T, r.data(), w.data(), k.data(), v.data(), kk.data(), a.data(), ld, y1.data(),
          ld);
  scalar::WkvHead(s2.data(), T, r.data(), w.data(), k.data(), v.data(), kk.data(), a.data(), ld,
                  y2.data(), ld);
  for (size_t i = 0; i < s1.size(); ++i) ASSERT_NEAR(s1[i], s2[i], 1e-4f) << i;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < 64; ++i) ASSERT_NEAR(y1[t * ld + i], y2[t * ld + i], 1e-3f);
}

TEST_P(KernelIsaTest, SumAndWidenMatchScalar) {
  for (int64_t n : {0, 5, 64, 1000, 4096 + 77}) {
    std::vector<float> x = Random(static_cast<size_t>(n), 12);
    double exact = 0;
    for (float v : x) exact += v;
    EXPECT_NEAR(SumFloats(x.data(), n), exact, 1e-4 * (1 + n / 100.0)) << n;
    std::vector<uint16_t> b(x.size());
    for (size_t i = 0; i < x.size(); ++i) b[i] = F32ToBF16(x[i]);
    std::vector<float> w1(x.size() + 1, -7.0f), w2 = w1;
    Bf16ToF32(b.data(), n, w1.data());
    scalar::Bf16ToF32(b.data(), n, w2.data());
    EXPECT_EQ(w1, w2) << n;  // exact, and the element after the end untouched
    if (n > 0) EXPECT_EQ(w1[0], BF16ToF32(b[0]));
    std::vector<int8_t> q(x.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(i % 255 - 127);
    std::vector<float> q1(x.size() + 1, -7.0f), q2 = q1;
    I8ToF32(q.data(), n, 0.5f, q1.data());
    scalar::I8ToF32(q.data(), n, 0.5f, q2.data());
    EXPECT_EQ(q1, q2) << n;
    if (n > 0) EXPECT_EQ(q1[0], -63.5f);
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, KernelIsaTest, testing::Values("scalar", "avx2", "avx512"),
                         [](const auto& info) { return info.param; });

TEST(WkvScalar, FollowsTheRecurrenceByHand) {
  // One token, state zero: S = v k^T, y_i = v_i * (k . r).
  std::vector<float> r(64), w(64, 0.9f), k(64), v(64), kk(64, 0.0f), a(64, 0.5f), y(64);
  for (int i = 0; i < 64; ++i) r[i] = 0.01f * i, k[i] = 1.0f - 0.01f * i, v[i] = 0.1f * (i % 7);
  std::vector<float> s(64 * 64, 0.0f);
  scalar::WkvHead(s.data(), 1, r.data(), w.data(), k.data(), v.data(), kk.data(), a.data(), 64,
                  y.data(), 64);
  float kr = 0;
  for (int j = 0; j < 64; ++j) kr += k[j] * r[j];
  for (int i = 0; i < 64; ++i) {
    EXPECT_NEAR(y[i], v[i] * kr, 1e-5f);
    EXPECT_FLOAT_EQ(s[i * 64 + 3], v[i] * k[3]);
  }
  // Second token with kk = e_0, a = 1: row i's key-0 entry is removed before decay-free update.
  std::fill(kk.begin(), kk.end(), 0.0f);
  kk[0] = 1.0f;
  std::fill(a.begin(), a.end(), 1.0f);
  std::fill(w.begin(), w.end(), 1.0f);
  std::fill(v.begin(), v.end(), 0.0f);
  scalar::WkvHead(s.data(), 1, r.data(), w.data(), k.data(), v.data(), kk.data(), a.data(), 64,
                  y.data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(s[i * 64 + 0], 0.0f, 1e-6f);
}

TEST(LayerNorm, NormalisesAndApplesAffine) {
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 1, 2, 2}, b = {0, 0, 1, 1}, out(4);
  LayerNorm(x.data(), w.data(), b.data(), 4, 0.0f, out.data());
  const float sd = std::sqrt(1.25f);
  EXPECT_NEAR(out[0], -1.5f / sd, 1e-6f);
  EXPECT_NEAR(out[3], 2 * 1.5f / sd + 1, 1e-6f);
}

}  // namespace
}  // namespace modrwkv::cpu

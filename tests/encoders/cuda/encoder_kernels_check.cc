// Each kernel of encoders/cuda/encoder_kernels.cuh against its CPU twin: ApplyActivation and
// ScaledSoftmax of transformer_ops.h, and WavLM's gate and biased softmax written out as
// wavlm_encoder.cc computes them. Without a device, the cases skip.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "encoders/cuda/encoder_kernels.cuh"
#include "encoders/vision/transformer_ops.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "gtest/gtest.h"

namespace modrwkv::encoders::cuda {
namespace {

using modrwkv::cuda::AllocDevice;
using modrwkv::cuda::DeviceBuffer;

bool HaveDevice() {
  absl::StatusOr<int> n = modrwkv::cuda::CudaDeviceCount();
  return n.ok() && *n > 0;
}

std::vector<float> Uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

DeviceBuffer<float> Up(const std::vector<float>& v) {
  DeviceBuffer<float> d = AllocDevice<float>(v.size()).value();
  EXPECT_EQ(cudaMemcpy(d.get(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  // cudaMemcpy from pageable memory may return before its DMA lands, on the legacy stream, which
  // the tests' non-blocking streams do not wait for.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return d;
}

std::vector<float> Down(const DeviceBuffer<float>& d, size_t n) {
  std::vector<float> v(n);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(v.data(), d.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double tol,
                const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
  }
}

TEST(EncoderKernelsTest, BiasActivationMatchesApplyActivation) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int rows = 37, n = 100;
  const std::vector<float> x = Uniform(static_cast<size_t>(rows) * n, 1, -6, 6),
                           b = Uniform(n, 2, -1, 1);
  for (auto [act, gpu_act] : {std::pair{Activation::kGeluErf, BiasActivation::kGeluErf},
                              {Activation::kGeluTanh, BiasActivation::kGeluTanh},
                              {Activation::kQuickGelu, BiasActivation::kQuickGelu}}) {
    std::vector<float> want = x, tmp(n);
    for (int r = 0; r < rows; ++r) {
      for (int i = 0; i < n; ++i) want[r * n + i] += b[i];
      ApplyActivation(act, want.data() + r * n, n, tmp.data());
    }
    DeviceBuffer<float> y = Up(x), db = Up(b);
    ASSERT_TRUE(LaunchBiasActivation(st.get(), y.get(), rows, n, db.get(), gpu_act).ok());
    ExpectNear(Down(y, x.size()), want, 1e-5, "activation");
  }
  std::vector<float> want = x;
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < n; ++i) want[r * n + i] += b[i];
  }
  DeviceBuffer<float> y = Up(x), db = Up(b);
  ASSERT_TRUE(
      LaunchBiasActivation(st.get(), y.get(), rows, n, db.get(), BiasActivation::kNone).ok());
  EXPECT_EQ(Down(y, x.size()), want);  // one addition each: exact
}

TEST(EncoderKernelsTest, ScaledSoftmaxMatchesTheCpuWithAndWithoutTheCausalMask) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  for (const int n : {1, 7, 300, 1500}) {
    const int heads = 3, rows = heads * n;
    const std::vector<float> s = Uniform(static_cast<size_t>(rows) * n, 3 + n, -20, 20);
    for (const bool causal : {false, true}) {
      std::vector<float> want = s;
      for (int r = 0; r < rows; ++r) {
        float* row = want.data() + int64_t{r} * n;
        const int kept = causal ? r % n + 1 : n;
        ScaledSoftmax(row, kept, 0.125f);
        std::fill(row + kept, row + n, 0.0f);
      }
      DeviceBuffer<float> d = Up(s);
      ASSERT_TRUE(LaunchScaledSoftmax(st.get(), d.get(), rows, n, 0.125f, causal ? n : 0).ok());
      ExpectNear(Down(d, s.size()), want, 1e-5, causal ? "causal" : "full");
    }
  }
}

TEST(EncoderKernelsTest, WavlmGateAndBiasedSoftmaxFollowWavlmsFormulas) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int batch = 2, t = 45, heads = 4, hd = 16, d = heads * hd, rows = batch * t;
  const std::vector<float> h = Uniform(static_cast<size_t>(rows) * d, 5, -2, 2);
  const std::vector<float> w = Uniform(8 * hd, 6, -0.3f, 0.3f), b = Uniform(8, 7, -0.5f, 0.5f);
  const std::vector<float> c = Uniform(heads, 8, 0.5f, 1.5f);
  std::vector<float> gate(static_cast<size_t>(batch) * heads * t);
  for (int r = 0; r < rows; ++r) {
    for (int head = 0; head < heads; ++head) {
      float p[8];
      for (int k = 0; k < 8; ++k) {
        double acc = b[k];
        for (int j = 0; j < hd; ++j) acc += double(w[k * hd + j]) * h[r * d + head * hd + j];
        p[k] = static_cast<float>(acc);
      }
      const double ga = 1 / (1 + std::exp(-(double(p[0]) + p[1] + p[2] + p[3])));
      const double gb = 1 / (1 + std::exp(-(double(p[4]) + p[5] + p[6] + p[7])));
      gate[(r / t * heads + head) * t + r % t] = static_cast<float>(ga * (gb * c[head] - 1) + 2);
    }
  }
  DeviceBuffer<float> dh = Up(h), dw = Up(w), dbias = Up(b), dc = Up(c);
  DeviceBuffer<float> dgate = AllocDevice<float>(gate.size()).value();
  ASSERT_TRUE(LaunchWavlmGate(st.get(), dh.get(), rows, t, heads, hd, dw.get(), dbias.get(),
                              dc.get(), dgate.get())
                  .ok());
  const std::vector<float> got_gate = Down(dgate, gate.size());
  ExpectNear(got_gate, gate, 1e-5, "gate");

  // One sequence's scores with the gated relative bias: the first clip's reference gate, then a
  // sequence longer than the kernel's 256 threads (each thread walks several keys of a row) with
  // gates in the gate's range.
  for (const int n : {t, 300}) {
    const std::vector<float> g =
        n == t ? gate : Uniform(static_cast<size_t>(heads) * n, 11, 1.0f, 3.0f);
    const std::vector<float> s = Uniform(static_cast<size_t>(heads) * n * n, 9, -8, 8);
    const std::vector<float> rel = Uniform(static_cast<size_t>(heads) * (2 * n - 1), 10, -1, 1);
    const float scale = 0.25f;
    std::vector<float> want = s;
    for (int head = 0; head < heads; ++head) {
      for (int i = 0; i < n; ++i) {
        float* row = want.data() + (int64_t{head} * n + i) * n;
        double m = -INFINITY, sum = 0;
        std::vector<double> v(n);
        for (int j = 0; j < n; ++j) {
          v[j] = double(row[j]) * scale +
                 double(g[head * n + i]) * rel[head * (2 * n - 1) + j - i + n - 1];
          m = std::max(m, v[j]);
        }
        for (int j = 0; j < n; ++j) sum += v[j] = std::exp(v[j] - m);
        for (int j = 0; j < n; ++j) row[j] = static_cast<float>(v[j] / sum);
      }
    }
    DeviceBuffer<float> ds = Up(s), drel = Up(rel), dg = Up(g);
    ASSERT_TRUE(
        LaunchBiasedSoftmax(st.get(), ds.get(), heads, n, scale, dg.get(), drel.get()).ok());
    ExpectNear(Down(ds, s.size()), want, 1e-5, n == t ? "biased softmax" : "biased softmax, long");
  }
}

}  // namespace
}  // namespace modrwkv::encoders::cuda

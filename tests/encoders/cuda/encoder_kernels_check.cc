// Each kernel of encoders/cuda/encoder_kernels.cuh against its CPU twin: ApplyActivation and
// ScaledSoftmax of transformer_ops.h, WavLM's gate, biased softmax and channel norm written out
// as wavlm_encoder.cc computes them, the convolution windows and EncoderDevice::Conv1d against
// the convolution written out. Without a device, the cases skip.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "encoders/cuda/encoder_device.h"
#include "encoders/cuda/encoder_kernels.cuh"
#include "encoders/vision/transformer_ops.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "gtest/gtest.h"
#include "tests/encoders/cuda/check_util.h"

namespace modrwkv::encoders::cuda {
namespace {

using modrwkv::cuda::AllocDevice;
using modrwkv::cuda::DeviceBuffer;

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

// The value a convolution window reads (ConvWindows), written out.
float WindowValue(const std::vector<float>& x, const ConvWindows& w, int64_t offset, int t, int k,
                  int c) {
  const int64_t src = int64_t{t} * w.stride + k - w.pad;
  return src >= 0 && src < w.in_frames ? x[offset + src * w.ld + c * w.channel_stride] : 0.0f;
}

// A grouped, padded, strided case: group 1 of 3 (a column offset into rows of 12), kernel 5
// reaching past both ends, a slice of output rows from t0 = 3.
TEST(EncoderKernelsTest, Im2ColCopiesEveryWindowWithItsPadding) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const ConvWindows w{.in_frames = 23,
                      .out_frames = 12,
                      .kernel = 5,
                      .stride = 2,
                      .pad = 2,
                      .ld = 12,
                      .channels = 4};
  const std::vector<float> x = Uniform(static_cast<size_t>(w.in_frames) * w.ld, 21, -1, 1);
  const int t0 = 3, rows = 9, width = w.kernel * w.channels;
  std::vector<float> want(static_cast<size_t>(rows) * width);
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < w.kernel; ++k) {
      for (int c = 0; c < w.channels; ++c) {
        want[r * width + k * w.channels + c] = WindowValue(x, w, 4, t0 + r, k, c);
      }
    }
  }
  DeviceBuffer<float> dx = Up(x), cols = Up(std::vector<float>(want.size(), NAN));
  ASSERT_TRUE(LaunchIm2Col(st.get(), dx.get() + 4, w, t0, rows, cols.get()).ok());
  ExpectNear(Down(cols, want.size()), want, 0, "windows");
  // Rows past the output are refused, naming the range.
  const absl::Status past = LaunchIm2Col(st.get(), dx.get(), w, t0, w.out_frames, cols.get());
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(past.message().find("output rows [3, 15) of 12"), std::string::npos) << past;

  // All three groups at once: a block of windows per group, group g from column 4g.
  ConvWindows all = w;
  all.groups = 3;
  std::vector<float> want_all(3 * want.size());
  for (int g = 0; g < 3; ++g) {
    for (int r = 0; r < rows; ++r) {
      for (int k = 0; k < w.kernel; ++k) {
        for (int c = 0; c < w.channels; ++c) {
          want_all[(g * rows + r) * width + k * w.channels + c] =
              WindowValue(x, w, 4 * g, t0 + r, k, c);
        }
      }
    }
  }
  DeviceBuffer<float> cols_all = Up(std::vector<float>(want_all.size(), NAN));
  ASSERT_TRUE(LaunchIm2Col(st.get(), dx.get(), all, t0, rows, cols_all.get()).ok());
  ExpectNear(Down(cols_all, want_all.size()), want_all, 0, "windows of every group");
}

// EncoderDevice::Conv1d against the convolution written out: windows copied in slices (one group
// of a padded, grouped convolution, and all its groups in one batched product, with slices of a
// few rows, the last one short), read in place (stride >= kernel, no padding), and gathered from
// a channel-major input.
TEST(EncoderKernelsTest, Conv1dMatchesTheConvolutionWrittenOut) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  auto dev = EncoderDevice::Open(0, EncoderMath::kF32, "the test");
  ASSERT_TRUE(dev.ok()) << dev.status();
  struct Case {
    ConvWindows w;
    int out;
    int64_t offset, ldy, slice_floats;
  };
  constexpr int64_t kWhole = EncoderDevice::kConvSliceFloats;
  const std::vector<Case> cases = {
      // WavLM's positional convolution: group 2 of 4 (8 channels), kernel 6, pad 3; 7 rows a
      // slice: 5 slices, the last of 2 rows.
      {{.in_frames = 30, .out_frames = 30, .kernel = 6, .pad = 3, .ld = 32, .channels = 8},
       8,
       16,
       32,
       7 * 48},
      // The same convolution, all 4 groups at once (8 outputs each), 7 rows a slice.
      {{.in_frames = 30,
        .out_frames = 30,
        .kernel = 6,
        .pad = 3,
        .ld = 32,
        .channels = 8,
        .groups = 4},
       32,
       0,
       32,
       7 * 4 * 48},
      // A feature encoder's strided layer: kernel 3, stride 2, overlapping windows.
      {{.in_frames = 41, .out_frames = 20, .kernel = 3, .stride = 2, .ld = 6, .channels = 6},
       5,
       0,
       5,
       kWhole},
      // Kernel 2, stride 2: the windows are the input's rows, read in place.
      {{.in_frames = 41, .out_frames = 20, .kernel = 2, .stride = 2, .ld = 6, .channels = 6},
       5,
       0,
       5,
       kWhole},
      // Whisper's conv1: channel-major input (mel bins), kernel 3, pad 1.
      {{.in_frames = 20,
        .out_frames = 20,
        .kernel = 3,
        .pad = 1,
        .ld = 1,
        .channels = 5,
        .channel_stride = 20},
       4,
       0,
       4,
       kWhole},
  };
  uint32_t seed = 30;
  for (const Case& c : cases) {
    const int width = c.w.kernel * c.w.channels;
    // Rows ld apart (time-major), or channels in_frames apart (channel-major, ld 1).
    const size_t nx = static_cast<size_t>(c.w.in_frames) * std::max<int64_t>(c.w.ld, c.w.channels);
    const std::vector<float> x = Uniform(nx, ++seed, -1, 1);
    const std::vector<float> w = Uniform(static_cast<size_t>(c.out) * width, ++seed, -1, 1);
    const size_t ny = static_cast<size_t>(c.w.out_frames) * c.ldy;
    std::vector<float> want(ny, 7.0f);  // columns outside the output keep their values
    for (int t = 0; t < c.w.out_frames; ++t) {
      for (int o = 0; o < c.out; ++o) {
        const int group = o / (c.out / c.w.groups);
        double sum = 0;
        for (int k = 0; k < c.w.kernel; ++k) {
          for (int ch = 0; ch < c.w.channels; ++ch) {
            sum += double(w[o * width + k * c.w.channels + ch]) *
                   WindowValue(x, c.w, c.offset, t, k, group * c.w.channels + ch);
          }
        }
        want[t * c.ldy + c.offset % c.ldy + o] = static_cast<float>(sum);
      }
    }
    DeviceBuffer<float> dx = Up(x), dw = Up(w), dy = Up(std::vector<float>(ny, 7.0f));
    DeviceScratch cols;
    ASSERT_TRUE((*dev)
                    ->Conv1d(dw.get(), c.out, c.w, dx.get() + c.offset, dy.get() + c.offset % c.ldy,
                             c.ldy, &cols, c.slice_floats)
                    .ok());
    ExpectNear(Down(dy, ny), want, 1e-5, "convolution");
  }
}

TEST(EncoderKernelsTest, PatchifyCutsImagesIntoPatchRows) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int batch = 2, channels = 3, size = 12, p = 4, g = size / p, cpp = channels * p * p;
  const std::vector<float> px =
      Uniform(static_cast<size_t>(batch) * channels * size * size, 61, -1, 1);
  std::vector<float> want(px.size());
  for (int b = 0; b < batch; ++b) {
    for (int gy = 0; gy < g; ++gy) {
      for (int gx = 0; gx < g; ++gx) {
        for (int k = 0; k < channels; ++k) {
          for (int ky = 0; ky < p; ++ky) {
            for (int kx = 0; kx < p; ++kx) {
              want[((b * g + gy) * g + gx) * cpp + (k * p + ky) * p + kx] =
                  px[((b * channels + k) * size + gy * p + ky) * size + gx * p + kx];
            }
          }
        }
      }
    }
  }
  DeviceBuffer<float> dpx = Up(px), cols = Up(std::vector<float>(px.size(), NAN));
  ASSERT_TRUE(LaunchPatchify(st.get(), dpx.get(), batch, channels, size, p, cols.get()).ok());
  ExpectNear(Down(cols, px.size()), want, 0, "patches");
  EXPECT_EQ(LaunchPatchify(st.get(), dpx.get(), batch, channels, 13, p, cols.get()).code(),
            absl::StatusCode::kInvalidArgument);
}

// GroupNorm with a group per channel over time, then GELU, against the same in double.
TEST(EncoderKernelsTest, ChannelNormGeluMatchesItsTwin) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int t = 301, c = 40;  // 40: the second block has 8 channels of its 32
  std::vector<float> x = Uniform(static_cast<size_t>(t) * c, 41, -2, 3);
  for (int r = 0; r < t; ++r) x[r * c + 5] = 100.0f + 0.01f * r;  // a large mean, a small spread
  const std::vector<float> w = Uniform(c, 42, 0.5f, 1.5f), b = Uniform(c, 43, -0.5f, 0.5f);
  const float eps = 1e-5f;
  std::vector<float> want = x;
  for (int ch = 0; ch < c; ++ch) {
    double mean = 0, var = 0;
    for (int r = 0; r < t; ++r) mean += x[r * c + ch];
    mean /= t;
    for (int r = 0; r < t; ++r) var += (x[r * c + ch] - mean) * (x[r * c + ch] - mean);
    var /= t;
    for (int r = 0; r < t; ++r) {
      const double v = (x[r * c + ch] - mean) / std::sqrt(var + eps) * w[ch] + b[ch];
      want[r * c + ch] = static_cast<float>(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    }
  }
  DeviceBuffer<float> dx = Up(x), dw = Up(w), db = Up(b);
  ASSERT_TRUE(LaunchChannelNormGelu(st.get(), dx.get(), t, c, dw.get(), db.get(), eps).ok());
  ExpectNear(Down(dx, x.size()), want, 2e-5, "channel norm");
}

TEST(EncoderKernelsTest, AddPeriodicAddsTheTableToEveryRepeat) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const std::vector<float> y = Uniform(3 * 70, 51, -1, 1), v = Uniform(70, 52, -1, 1);
  std::vector<float> want = y;
  for (size_t i = 0; i < y.size(); ++i) want[i] += v[i % 70];
  DeviceBuffer<float> dy = Up(y), dv = Up(v);
  ASSERT_TRUE(LaunchAddPeriodic(st.get(), dy.get(), y.size(), dv.get(), 70).ok());
  ExpectNear(Down(dy, y.size()), want, 0, "add");
  EXPECT_EQ(LaunchAddPeriodic(st.get(), dy.get(), y.size(), dv.get(), 0).code(),
            absl::StatusCode::kInvalidArgument);
}

// The Timer's rotary embedding, written out (timer.cc's Rotate): q and k of each head rotated by
// their row's position within its sequence, v untouched.
TEST(EncoderKernelsTest, RotaryTurnsQAndKByTheirPositions) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int t = 13, seqs = 2, heads = 3, hd = 8, half = hd / 2, d = heads * hd, rows = seqs * t;
  const std::vector<float> qkv = Uniform(static_cast<size_t>(rows) * 3 * d, 61, -2, 2);
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(10000.0f, 2.0f * i / hd);
  std::vector<float> want = qkv;
  for (int r = 0; r < rows; ++r) {
    for (int which = 0; which < 2; ++which) {  // q, k
      for (int h = 0; h < heads; ++h) {
        float* x = want.data() + int64_t{r} * 3 * d + which * d + h * hd;
        for (int i = 0; i < half; ++i) {
          const float angle = static_cast<float>(r % t) * inv_freq[i];
          const float c = static_cast<float>(std::cos(double{angle}));
          const float s = static_cast<float>(std::sin(double{angle}));
          const float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c - x2 * s;
          x[i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  DeviceBuffer<float> dq = Up(qkv), df = Up(inv_freq);
  ASSERT_TRUE(LaunchRotary(st.get(), dq.get(), rows, t, heads, hd, df.get()).ok());
  const std::vector<float> got = Down(dq, qkv.size());
  ExpectNear(got, want, 1e-6, "rotary");
  for (int r = 0; r < rows; ++r) {  // v, bit for bit
    for (int i = 0; i < d; ++i) ASSERT_EQ(got[r * 3 * d + 2 * d + i], qkv[r * 3 * d + 2 * d + i]);
  }
  EXPECT_EQ(LaunchRotary(st.get(), dq.get(), rows, t, heads, 7, df.get()).code(),
            absl::StatusCode::kInvalidArgument);  // an odd head width has no halves
}

TEST(EncoderKernelsTest, SiluGateMultipliesTheActivatedGateByUp) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const modrwkv::cuda::CudaStream st = modrwkv::cuda::CreateStream().value();
  const int rows = 9, f = 70;
  const std::vector<float> gu = Uniform(static_cast<size_t>(rows) * 2 * f, 71, -8, 8);
  std::vector<float> want(static_cast<size_t>(rows) * f);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < f; ++i) {
      const double g = gu[r * 2 * f + i], u = gu[r * 2 * f + f + i];
      want[r * f + i] = static_cast<float>(g / (1 + std::exp(-g)) * u);
    }
  }
  DeviceBuffer<float> dgu = Up(gu), act = AllocDevice<float>(want.size()).value();
  ASSERT_TRUE(LaunchSiluGate(st.get(), dgu.get(), rows, f, act.get()).ok());
  ExpectNear(Down(act, want.size()), want, 1e-5, "silu gate");
  EXPECT_EQ(LaunchSiluGate(st.get(), dgu.get(), rows, -1, act.get()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::encoders::cuda

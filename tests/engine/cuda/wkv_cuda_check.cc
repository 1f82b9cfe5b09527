// The CUDA kernels against their CPU twins: engine/cuda/wkv.cu against cpu::scalar::WkvHead,
// engine/cuda/to_half.cu against the host's F32ToBF16 / F32ToF16, engine/cuda/gemv_half.cu
// against a plain loop over the widened weights, engine/cuda/sample.cu against
// ReferenceDeviceDraw / ReferenceDeviceLogprobs; and engine/cuda/cuda_check.cc. The launchers of
// engine/cuda/rwkv7_ops.cuh are tested in ops_cuda_check.cc (the same binary).
// Built by engine/cuda/CMakeLists.txt as `cuda_wkv_test` (named *_check.cc so that the
// tests/engine/**/*_test.cc glob, whose binaries link only `engine`, does not pick it up).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/launch.h"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/sample.cuh"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/sampling/device_draw.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

constexpr int N = 64;

// ---- without a GPU ----

absl::Status FailingCall() {
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaErrorInvalidValue);
  return absl::OkStatus();
}

TEST(CudaCheckTest, DeviceCountIsNotAnErrorWithoutADevice) {
  absl::StatusOr<int> n = CudaDeviceCount();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_GE(*n, 0);
}

TEST(CudaCheckTest, ErrorsBecomeStatusesNamingTheCall) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "x").ok());
  const absl::Status s = CudaStatus(cudaErrorInvalidValue, "x");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().substr(0, 3), "x: ") << s;
  EXPECT_NE(s.message().find("cudaErrorInvalidValue"), std::string::npos) << s;
  EXPECT_EQ(CudaStatus(cudaErrorMemoryAllocation, "alloc").code(),
            absl::StatusCode::kResourceExhausted);

  const absl::Status m = FailingCall();
  EXPECT_FALSE(m.ok());
  EXPECT_NE(m.message().find("cudaErrorInvalidValue"), std::string::npos) << m;

  const absl::Status b = CublasStatus(CUBLAS_STATUS_INVALID_VALUE, "cublasSgemm");
  EXPECT_EQ(b.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.message().find("cublasSgemm"), std::string::npos) << b;
}

TEST(CudaCheckTest, AllocationWithoutADeviceIsAStatusNotACrash) {
  absl::StatusOr<int> n = CudaDeviceCount();
  ASSERT_TRUE(n.ok()) << n.status();
  if (*n > 0) GTEST_SKIP() << "a device is present";
  absl::StatusOr<DeviceBuffer<float>> buf = AllocDevice<float>(1024);
  EXPECT_FALSE(buf.ok());
  EXPECT_NE(buf.status().message().find("cudaMalloc"), std::string::npos) << buf.status();
}

TEST(Wkv7LaunchTest, RejectsBadShapesBeforeTouchingTheDevice) {
  // 16-byte aligned, as a state pool must be: each case is then refused for what it names, not
  // for the pool's alignment (checked first).
  alignas(16) float f = 0;
  int32_t i = 0;
  auto launch = [&](int B, int H, int64_t ld, int64_t head_stride, int64_t slot_stride) {
    return LaunchWkv7(nullptr, &f, &i, B, H, &i, B, WkvForm::kAuto, &f, &f, &f, &f, &f, &f, ld, &f,
                      ld, slot_stride, head_stride);
  };
  EXPECT_EQ(launch(1, 0, 64, N * N, N * N).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(-1, 1, 64, N * N, N * N).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 2, 64, N * N, 2 * N * N).code(), absl::StatusCode::kInvalidArgument);  // ld
  EXPECT_EQ(launch(1, 1, 64, 100, N * N).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 2, 128, N * N, N * N).code(), absl::StatusCode::kInvalidArgument);
  // Rows move in 16-byte accesses: a stride that breaks their alignment is refused.
  EXPECT_EQ(launch(1, 1, 64, N * N + 2, 2 * (N * N + 2)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 2, 128, N * N, 2 * N * N).ok());  // empty batch: nothing to do
}

// ---- against the CPU twin (needs a GPU) ----

struct WkvCase {
  std::string name;
  std::vector<int> lengths;  // tokens per sequence (0 allowed)
  std::vector<int> slots;  // slot of each sequence in the pool, distinct, not in order; -1: padding
  int H;
  int num_slots;
  int ld_pad;  // extra floats per activation row beyond H*64
};

// Keeps gtest from printing the case as raw bytes in test names and failures.
void PrintTo(const WkvCase& c, std::ostream* os) { *os << c.name; }

using testing_util::Download;
using testing_util::Random;
using testing_util::Upload;

// |got - want| <= 1e-4 * max(1, max |want|), element-wise.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  float scale = 1.f;
  for (float x : want) scale = std::max(scale, std::fabs(x));
  const float tol = 1e-4f * scale;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol) && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: gpu " << got[i] << " cpu " << want[i]
                    << " (tolerance " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

class Wkv7VsCpuTest : public testing::TestWithParam<WkvCase> {
 protected:
  void SetUp() override {
    absl::StatusOr<int> n = CudaDeviceCount();
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(Wkv7VsCpuTest, MatchesScalarWkvHead) {
  const WkvCase& c = GetParam();
  const int B = static_cast<int>(c.lengths.size());
  const int H = c.H;
  const int64_t C = static_cast<int64_t>(H) * N;
  const int64_t ld = C + c.ld_pad;
  const int64_t ldy = C + 3;  // y rows padded differently from the inputs
  const int64_t head_stride = N * N;
  const int64_t slot_stride = H * head_stride + 128;  // padded slots

  std::vector<int32_t> offsets(B + 1, 0);
  for (int b = 0; b < B; ++b) offsets[b + 1] = offsets[b] + c.lengths[b];
  const int rows = offsets[B];

  std::mt19937 g(1234);
  const size_t act = static_cast<size_t>(std::max(rows, 1)) * ld;
  std::vector<float> r = Random(act, g, -1, 1), k = Random(act, g, -1, 1),
                     v = Random(act, g, -1, 1), w = Random(act, g, 0.5f, 0.999f),
                     a = Random(act, g, 0, 1), kk = Random(act, g, -1, 1);
  // kk is L2-normalised per head in the model; keeps the recurrence bounded.
  for (int t = 0; t < rows; ++t) {
    for (int h = 0; h < H; ++h) {
      float* p = kk.data() + t * ld + h * N;
      float ss = 0;
      for (int j = 0; j < N; ++j) ss += p[j] * p[j];
      const float inv = 1.f / std::max(std::sqrt(ss), 1e-12f);
      for (int j = 0; j < N; ++j) p[j] *= inv;
    }
  }
  std::vector<float> pool = Random(static_cast<size_t>(c.num_slots) * slot_stride, g, -0.5f, 0.5f);
  std::vector<float> y(static_cast<size_t>(std::max(rows, 1)) * ldy, -7.f);

  // CPU twin, head by head.
  std::vector<float> pool_cpu = pool, y_cpu = y;
  for (int b = 0; b < B; ++b) {
    const int64_t t0 = offsets[b];
    if (c.slots[b] < 0) {  // a padding sequence: no state, zero outputs
      for (int64_t t = t0; t < offsets[b + 1]; ++t) {
        std::fill_n(y_cpu.data() + t * ldy, C, 0.0f);
      }
      continue;
    }
    for (int h = 0; h < H; ++h) {
      const int64_t in = t0 * ld + h * N;
      cpu::scalar::WkvHead(pool_cpu.data() + c.slots[b] * slot_stride + h * head_stride,
                           c.lengths[b], r.data() + in, w.data() + in, k.data() + in, v.data() + in,
                           kk.data() + in, a.data() + in, ld, y_cpu.data() + t0 * ldy + h * N, ldy);
    }
  }

  // Every case both ways (WkvForm): walked token by token, where `rows` only picks how many
  // tokens are staged at a time (rows == B: one, as for a decode step; any value is correct, so B
  // also runs every case with one token staged at a time), and in chunks of 16 tokens.
  struct Run {
    WkvForm form;
    int64_t rows_hint;
    const char* what;
  };
  for (const Run run : {Run{WkvForm::kWalk, rows, "walk, 8 tokens staged at a time"},
                        Run{WkvForm::kWalk, B, "walk, one token staged at a time"},
                        Run{WkvForm::kChunked, rows, "chunked"}}) {
    SCOPED_TRACE(run.what);
    const int64_t rows_hint = run.rows_hint;
    DeviceBuffer<float> d_pool = Upload(pool), d_r = Upload(r), d_w = Upload(w), d_k = Upload(k),
                        d_v = Upload(v), d_kk = Upload(kk), d_a = Upload(a), d_y = Upload(y);
    DeviceBuffer<int32_t> d_slots = Upload(c.slots), d_offsets = Upload(offsets);
    ASSERT_FALSE(HasFailure());
    absl::StatusOr<CudaStream> stream = CreateStream();
    ASSERT_TRUE(stream.ok()) << stream.status();

    const absl::Status launched =
        LaunchWkv7(stream->get(), d_pool.get(), d_slots.get(), B, H, d_offsets.get(), rows_hint,
                   run.form, d_r.get(), d_w.get(), d_k.get(), d_v.get(), d_kk.get(), d_a.get(), ld,
                   d_y.get(), ldy, slot_stride, head_stride);
    ASSERT_TRUE(launched.ok()) << launched;
    ASSERT_EQ(cudaStreamSynchronize(stream->get()), cudaSuccess);

    const std::vector<float> pool_gpu = Download(d_pool, pool.size());
    const std::vector<float> y_gpu = Download(d_y, y.size());
    ExpectClose(pool_gpu, pool_cpu, "state pool");  // untouched slots and padding must match too
    ExpectClose(y_gpu, y_cpu, "y");                 // padding columns must stay -7
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Wkv7VsCpuTest,
    testing::Values(WkvCase{"TwoSequencesThreeHeads", {5, 23}, {2, 0}, 3, 4, 0},
                    WkvCase{"DecodeAndEmptyAndLongPrefill", {1, 0, 70}, {3, 1, 2}, 2, 5, 16},
                    WkvCase{"SingleToken", {1}, {0}, 1, 1, 0},
                    WkvCase{"PaddingSequences", {1, 1, 1}, {-1, 1, -1}, 2, 2, 0},
                    // The walk stages 8 tokens at a time, the chunked form takes 16: whole
                    // chunks, one more token, one fewer, none.
                    WkvCase{"ChunkBoundaries", {8, 16, 9, 0, 2}, {4, 0, 3, 1, 2}, 1, 5, 4},
                    WkvCase{"ChunkedBoundaries", {32, 33, 15, 47}, {1, 3, 0, 2}, 2, 4, 0},
                    // The chunked form gives a block 16, 32 or 64 state rows, the fewest blocks
                    // that fill the device: these cases take 32 and 64 on an A100 or H100/H200
                    // (108-132 SMs), the ones above 16.
                    WkvCase{"ChunkedHalfHeadsPerBlock", {20, 33}, {1, 0}, 40, 2, 0},
                    WkvCase{"ChunkedWholeHeadsPerBlock", {40, 3, 17}, {2, 0, 1}, 48, 3, 8}),
    [](const testing::TestParamInfo<WkvCase>& info) { return info.param.name; });

// The activations' rounding for tensor-core products, over ordinary values, halfway cases,
// denormals, infinities, NaN and an odd count. bf16: bit for bit the host's F32ToBF16. fp16: the
// host's F32ToF16, except that finite values beyond fp16's range saturate to +-65504.
TEST(F32ToHalfTest, RoundsLikeTheHost) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<float> in = {0.0f,    -0.0f,   1.0f,  -1.5f, 3.14159f, 1e-40f,    -1e-45f, 3.4e38f,
                           65504.f, 65520.f, -7e4f, 6e-8f, INFINITY, -INFINITY, NAN};
  for (uint32_t bits : {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0x3f801000u}) {
    float f;  // ties and carries of both roundings
    std::memcpy(&f, &bits, 4);
    in.push_back(f);
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  while (in.size() < 1001) in.push_back(normal(rng));  // odd: the kernel's tail
  auto d_in = AllocDevice<float>(in.size()).value();
  auto d_out = AllocDevice<uint16_t>(in.size()).value();
  ASSERT_EQ(cudaMemcpy(d_in.get(), in.data(), in.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  for (const HalfType type : {HalfType::kBF16, HalfType::kF16}) {
    const bool bf16 = type == HalfType::kBF16;
    ASSERT_TRUE(LaunchF32ToHalf(nullptr, type, d_in.get(), in.size(), d_out.get()).ok());
    std::vector<uint16_t> out(in.size());
    ASSERT_EQ(cudaMemcpy(out.data(), d_out.get(), out.size() * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    for (size_t i = 0; i < in.size(); ++i) {
      const float v = in[i];
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(bf16 ? BF16ToF32(out[i]) : F16ToF32(out[i]))) << i;
      } else if (bf16) {
        EXPECT_EQ(out[i], F32ToBF16(v)) << i << ": " << v;
      } else {
        const float c = std::isinf(v) ? v : std::clamp(v, -65504.0f, 65504.0f);
        EXPECT_EQ(out[i], F32ToF16(c)) << i << ": " << v;
      }
    }
    EXPECT_EQ(LaunchF32ToHalf(nullptr, type, d_in.get(), -1, d_out.get()).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// The few-row products of 16-bit weights against a plain loop over the widened weights (f32
// sums in another order): both weight types, the wide form (in % 8 == 0) and the pair form,
// rows long enough to be split between 2, 4 and 8 warps (4096, 8192, 16400: slices of uneven
// sizes) and output counts that leave a block's last warps without a row, 1 to 17 rows (a partial
// pass of 8), with and without accumulation.
TEST(GemvHalfTest, MatchesAPlainLoop) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  struct Case {
    int out, in, rows;
    bool accumulate;
  };
  for (const HalfType type : {HalfType::kBF16, HalfType::kF16}) {
    for (const Case& c : {Case{37, 2048, 1, false}, Case{64, 4096, 9, true},
                          Case{5, 1000, 17, false}, Case{33, 70, 3, true}, Case{8, 2, 2, false},
                          Case{13, 8192, 3, true}, Case{21, 16400, 1, false}}) {
      std::vector<uint16_t> w(static_cast<size_t>(c.out) * c.in);
      std::vector<float> wf(w.size()), x(static_cast<size_t>(c.rows) * c.in),
          y(static_cast<size_t>(c.rows) * c.out);
      for (size_t i = 0; i < w.size(); ++i) {
        const float v = normal(rng);
        w[i] = type == HalfType::kBF16 ? F32ToBF16(v) : F32ToF16(v);
        wf[i] = type == HalfType::kBF16 ? BF16ToF32(w[i]) : F16ToF32(w[i]);
      }
      for (float& v : x) v = normal(rng);
      for (float& v : y) v = normal(rng);
      std::vector<float> want = y;
      for (int r = 0; r < c.rows; ++r) {
        for (int o = 0; o < c.out; ++o) {
          double acc = 0;
          for (int i = 0; i < c.in; ++i) {
            acc += static_cast<double>(wf[static_cast<size_t>(o) * c.in + i]) *
                   x[static_cast<size_t>(r) * c.in + i];
          }
          float& dst = want[static_cast<size_t>(r) * c.out + o];
          dst = static_cast<float>(c.accumulate ? dst + acc : acc);
        }
      }
      auto d_w = AllocDevice<uint16_t>(w.size()).value();
      auto d_x = AllocDevice<float>(x.size()).value();
      auto d_y = AllocDevice<float>(y.size()).value();
      ASSERT_EQ(cudaMemcpy(d_w.get(), w.data(), w.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_x.get(), x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(d_y.get(), y.data(), y.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_TRUE(LaunchGemvHalf(nullptr, type, d_w.get(), c.out, c.in, d_x.get(), c.rows,
                                 d_y.get(), c.accumulate)
                      .ok());
      std::vector<float> got(y.size());
      ASSERT_EQ(cudaMemcpy(got.data(), d_y.get(), got.size() * 4, cudaMemcpyDeviceToHost),
                cudaSuccess);
      const float tol = 1e-4f * std::sqrt(static_cast<float>(c.in));
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], tol)
            << "out " << c.out << " in " << c.in << " rows " << c.rows << " element " << i;
      }
    }
  }
  EXPECT_EQ(
      LaunchGemvHalf(nullptr, HalfType::kF16, nullptr, 4, 3, nullptr, 1, nullptr, false).code(),
      absl::StatusCode::kInvalidArgument);  // odd `in`
}

// The first weight loads issued before the wait for the predecessor (EarlyWeightLoads) feed the
// same products in the same order: the same bits with them on and off. Lanes whose slice is
// shorter than one unrolled step (in = 96: 12 chunks, 40: 5; in = 2056: 257 chunks, one more for
// lane 0), exactly two steps (2048), rows split between warps (8192, 16400), one pass of rows and
// three (17 rows: the early chunks serve the first pass only), and a pair-form job beside them.
TEST(GemvHalfTest, EarlyWeightLoadsChangeNoBit) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(33);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  const int shapes[][2] = {{40, 96},  {9, 40},    {24, 2048}, {11, 2056},
                           {5, 8192}, {3, 16400}, {6, 70}};
  std::vector<DeviceBuffer<uint16_t>> ws;
  std::vector<DeviceBuffer<float>> xs, ys;
  constexpr int kMaxRows = 17;
  for (const auto& sh : shapes) {
    std::vector<uint16_t> w(static_cast<size_t>(sh[0]) * sh[1]);
    std::vector<float> x(static_cast<size_t>(kMaxRows) * sh[1]);
    for (auto& v : w) v = F32ToBF16(normal(rng));
    for (float& v : x) v = normal(rng);
    ws.push_back(AllocDevice<uint16_t>(w.size()).value());
    xs.push_back(AllocDevice<float>(x.size()).value());
    ys.push_back(AllocDevice<float>(static_cast<size_t>(kMaxRows) * sh[0]).value());
    ASSERT_EQ(cudaMemcpy(ws.back().get(), w.data(), w.size() * 2, cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(xs.back().get(), x.data(), x.size() * 4, cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<GemvJob> jobs;
  for (size_t j = 0; j < ws.size(); ++j) {
    jobs.push_back(GemvJob{ws[j].get(), shapes[j][0], shapes[j][1], xs[j].get(), ys[j].get(),
                           j % 2 == 0 ? GemvEpilogue::kStore : GemvEpilogue::kTanh});
  }
  auto run = [&](bool early, int rows) {
    SetEarlyWeightLoads(early);
    EXPECT_EQ(EarlyWeightLoads(), early);
    std::vector<std::vector<float>> out;
    EXPECT_TRUE(LaunchGemvHalfGroup(nullptr, HalfType::kBF16, jobs, rows).ok());
    for (size_t j = 0; j < jobs.size(); ++j) {
      out.emplace_back(static_cast<size_t>(rows) * shapes[j][0]);
      EXPECT_EQ(
          cudaMemcpy(out.back().data(), ys[j].get(), out.back().size() * 4, cudaMemcpyDeviceToHost),
          cudaSuccess);
    }
    return out;
  };
  for (const int rows : {1, 3, 17}) {
    const auto plain = run(false, rows);
    const auto early = run(true, rows);
    for (size_t j = 0; j < jobs.size(); ++j) {
      ASSERT_EQ(0, std::memcmp(plain[j].data(), early[j].data(), plain[j].size() * 4))
          << "job " << j << " (" << shapes[j][0] << " x " << shapes[j][1] << "), rows " << rows;
    }
  }
  SetEarlyWeightLoads(true);
}

// A group of products in one launch (the layer's r, k, v with its LoRA down-projections, as
// CudaModel runs them): every epilogue, wide and pair forms and an empty job side by side, each
// job against a plain loop with the activation of rwkv7_math.h on its sum, and no job touching
// another's output.
TEST(GemvHalfTest, GroupRunsEveryJobWithItsEpilogue) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  struct Spec {
    int out, in;
    GemvEpilogue e;
  };
  const Spec specs[] = {
      {200, 256, GemvEpilogue::kStore},      {64, 256, GemvEpilogue::kTanh},
      {33, 70, GemvEpilogue::kSigmoid},      {0, 256, GemvEpilogue::kStore},
      {300, 256, GemvEpilogue::kReluSquare}, {17, 8192, GemvEpilogue::kAccumulate},
      {8, 2, GemvEpilogue::kStore},          {512, 64, GemvEpilogue::kTanh}};
  for (const HalfType type : {HalfType::kBF16, HalfType::kF16}) {
    for (const int rows : {1, 5, 11}) {
      std::vector<GemvJob> jobs;
      std::vector<DeviceBuffer<uint16_t>> ws;
      std::vector<DeviceBuffer<float>> xs, ys;
      std::vector<std::vector<float>> want;
      for (const Spec& sp : specs) {
        std::vector<uint16_t> w(static_cast<size_t>(sp.out) * sp.in);
        std::vector<float> x(static_cast<size_t>(rows) * sp.in),
            y(static_cast<size_t>(rows) * sp.out);
        for (auto& v : w)
          v = type == HalfType::kBF16 ? F32ToBF16(normal(rng)) : F32ToF16(normal(rng));
        for (float& v : x) v = normal(rng);
        for (float& v : y) v = normal(rng);
        std::vector<float> expect = y;
        for (int r = 0; r < rows; ++r) {
          for (int o = 0; o < sp.out; ++o) {
            double acc = 0;
            for (int i = 0; i < sp.in; ++i) {
              const uint16_t b = w[static_cast<size_t>(o) * sp.in + i];
              acc += static_cast<double>(type == HalfType::kBF16 ? BF16ToF32(b) : F16ToF32(b)) *
                     x[static_cast<size_t>(r) * sp.in + i];
            }
            const float sum = static_cast<float>(acc);
            float& dst = expect[static_cast<size_t>(r) * sp.out + o];
            switch (sp.e) {
              case GemvEpilogue::kStore:
                dst = sum;
                break;
              case GemvEpilogue::kAccumulate:
                dst += sum;
                break;
              case GemvEpilogue::kTanh:
                dst = std::tanh(sum);
                break;
              case GemvEpilogue::kSigmoid:
                dst = math::Sigmoid(sum);
                break;
              case GemvEpilogue::kReluSquare:
                dst = math::ReluSquare(sum);
                break;
            }
          }
        }
        want.push_back(expect);
        ws.push_back(AllocDevice<uint16_t>(std::max<size_t>(w.size(), 8)).value());
        xs.push_back(AllocDevice<float>(std::max<size_t>(x.size(), 4)).value());
        ys.push_back(AllocDevice<float>(std::max<size_t>(y.size(), 4)).value());
        if (!w.empty()) {
          ASSERT_EQ(cudaMemcpy(ws.back().get(), w.data(), w.size() * 2, cudaMemcpyHostToDevice),
                    cudaSuccess);
        }
        ASSERT_EQ(cudaMemcpy(xs.back().get(), x.data(), x.size() * 4, cudaMemcpyHostToDevice),
                  cudaSuccess);
        if (!y.empty()) {
          ASSERT_EQ(cudaMemcpy(ys.back().get(), y.data(), y.size() * 4, cudaMemcpyHostToDevice),
                    cudaSuccess);
        }
        jobs.push_back(
            GemvJob{ws.back().get(), sp.out, sp.in, xs.back().get(), ys.back().get(), sp.e});
      }
      ASSERT_TRUE(LaunchGemvHalfGroup(nullptr, type, jobs, rows).ok());
      for (size_t j = 0; j < jobs.size(); ++j) {
        std::vector<float> got(want[j].size());
        if (got.empty()) continue;
        ASSERT_EQ(cudaMemcpy(got.data(), ys[j].get(), got.size() * 4, cudaMemcpyDeviceToHost),
                  cudaSuccess);
        const float tol = 1e-4f * std::sqrt(static_cast<float>(specs[j].in));
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_NEAR(got[i], want[j][i], tol)
              << "job " << j << " rows " << rows << " element " << i;
        }
      }
    }
  }
  std::vector<GemvJob> nine(9);
  EXPECT_EQ(LaunchGemvHalfGroup(nullptr, HalfType::kBF16, nine, 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchGemvHalfGroup(nullptr, HalfType::kBF16, {}, 1).code(),
            absl::StatusCode::kInvalidArgument);
}

// The device draw against its CPU twin: rows of random logits (V = 5000: a partial last chunk)
// with edits and every kind of draw, 40 random numbers each, plus rows with exact ties (the tie
// ranks across chunks), greedy, +inf, all-banned, tiny-temperature and min_p > 1 rows, most of
// them reporting logprobs (checked against ReferenceDeviceLogprobs for the chosen token). Masses
// are fixed point on the device and double in the twin, so a draw landing within ~1e-12 of a
// boundary may differ: at most one (one in a thousand) is allowed (none is expected).
TEST(DrawRowsTest, MatchesReferenceDeviceDraw) {
  absl::StatusOr<int> devices = CudaDeviceCount();
  if (!devices.ok() || *devices == 0) GTEST_SKIP() << "no CUDA device";
  constexpr int V = 5000;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  struct Row {
    std::vector<float> logits;
    std::vector<LogitEdit> edits;
    DeviceDraw draw;
  };
  std::vector<Row> rows;
  const DeviceDraw kinds[] = {{1.0f, 0, 1.0f, 0.0f, 0, 0},     {0.7f, 50, 1.0f, 0.0f, 0, 0},
                              {1.0f, 0, 0.9f, 0.0f, 0, 0},     {1.3f, 0, 1.0f, 0.03f, 0, 0},
                              {0.8f, 200, 0.75f, 0.01f, 0, 0}, {0.0f, 0, 1.0f, 0.0f, 0, 0},
                              {1.0f, 1, 1.0f, 0.0f, 0, 0},     {2.0f, 0, 0.999f, 0.0f, 0, 0},
                              {1e4f, 0, 0.9f, 0.0f, 0, 0}};  // hot: the logprobs stay exact
  // Fewer rows through the emulator (its threads run one at a time).
  const int rows_per_kind = testing_util::kEmulated ? 8 : 40;
  for (const DeviceDraw& kind : kinds) {
    for (int r = 0; r < rows_per_kind; ++r) {
      Row row;
      row.logits.resize(V);
      for (float& v : row.logits) v = normal(rng);
      for (int t = 0; t < 30; ++t) {
        row.edits.push_back(
            {static_cast<int32_t>(t * 157 % V), 1.3f, 0.5f * (t % 3), 0.25f, t % 10 == 0 ? 1 : 0});
      }
      row.draw = kind;
      row.draw.u = uniform(rng);
      row.draw.logprobs_top_n = r % 4 == 0 ? -1 : (r % 4 == 1 ? 0 : (r % 4 == 2 ? 5 : 20));
      rows.push_back(std::move(row));
    }
  }
  const int random_rows = static_cast<int>(rows.size());  // the rest must match exactly
  // Exact ties: 3000 tokens of one logit across three chunks, top-k and top-p cutting inside them.
  for (const DeviceDraw& kind :
       {DeviceDraw{1.0f, 1500, 1.0f, 0.0f, 0, 0}, DeviceDraw{1.0f, 0, 0.37f, 0.0f, 0, 0},
        DeviceDraw{1.0f, 2500, 0.5f, 0.0f, 0, 0}}) {
    for (int r = 0; r < 20; ++r) {
      Row row;
      row.logits.assign(V, -3.0f);
      for (int i = 1000; i < 4000; ++i) row.logits[i] = 1.0f;
      row.draw = kind;
      row.draw.u = uniform(rng);
      rows.push_back(std::move(row));
    }
  }
  {  // degenerate: everything banned (fallback), a +inf logit, NaNs
    Row banned;
    banned.logits.assign(V, 0.0f);
    for (int t = 0; t < V; ++t) banned.edits.push_back({t, 1.0f, 0.0f, 0.0f, 1});
    banned.draw.fallback = 7;
    rows.push_back(banned);
    Row inf;
    inf.logits.assign(V, 0.0f);
    inf.logits[4321] = INFINITY;
    inf.logits[4999] = INFINITY;
    rows.push_back(inf);
    Row nan;
    nan.logits.assign(V, std::nanf(""));
    nan.logits[12] = 1.0f;
    nan.logits[2048] = 1.5f;
    nan.draw.u = 0.9;
    rows.push_back(nan);
    Row tiny_t;  // 1 / temperature overflows: greedy (not NaN masses)
    tiny_t.logits = rows[0].logits;
    tiny_t.draw.temperature = 1e-39f;
    rows.push_back(tiny_t);
    Row min_p;  // min_p above the top token's 1: nothing kept, the argmax
    min_p.logits = rows[1].logits;
    min_p.draw.min_p = 1.5f;
    min_p.draw.u = 0.999;
    rows.push_back(min_p);
    for (Row* r : {&rows[rows.size() - 1], &rows[rows.size() - 2], &rows[rows.size() - 3],
                   &rows[rows.size() - 4], &rows[rows.size() - 5]}) {
      r->draw.logprobs_top_n = 3;  // the degenerate rows report logprobs too
    }
  }
  const int R = static_cast<int>(rows.size());
  std::vector<float> logits;
  std::vector<int32_t> offsets = {0};
  std::vector<LogitEdit> edits;
  std::vector<DeviceDraw> draws;
  std::vector<int32_t> want;
  std::vector<std::vector<float>> edited;
  for (const Row& row : rows) {
    logits.insert(logits.end(), row.logits.begin(), row.logits.end());
    edits.insert(edits.end(), row.edits.begin(), row.edits.end());
    offsets.push_back(static_cast<int32_t>(edits.size()));
    draws.push_back(row.draw);
    std::vector<float> l = row.logits;
    ApplyLogitEdits(absl::MakeSpan(l), row.edits);
    want.push_back(ReferenceDeviceDraw(l, row.draw));
    edited.push_back(std::move(l));
  }
  auto d_logits = AllocDevice<float>(logits.size()).value();
  auto d_offsets = AllocDevice<int32_t>(offsets.size()).value();
  auto d_edits = AllocDevice<LogitEdit>(edits.size()).value();
  auto d_draws = AllocDevice<DeviceDraw>(draws.size()).value();
  auto d_tokens = AllocDevice<int32_t>(R).value();
  auto d_logprobs = AllocDevice<DeviceLogprobs>(R).value();
  ASSERT_EQ(cudaMemcpy(d_logits.get(), logits.data(), logits.size() * 4, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_offsets.get(), offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_edits.get(), edits.data(), edits.size() * sizeof(LogitEdit),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_draws.get(), draws.data(), draws.size() * sizeof(DeviceDraw),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_TRUE(LaunchDrawRows(nullptr, d_logits.get(), R, V, d_draws.get(), d_offsets.get(),
                             d_edits.get(), d_tokens.get(), d_logprobs.get())
                  .ok());
  std::vector<int32_t> got(R);
  ASSERT_EQ(cudaMemcpy(got.data(), d_tokens.get(), R * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<DeviceLogprobs> got_lp(R);
  ASSERT_EQ(cudaMemcpy(got_lp.data(), d_logprobs.get(), R * sizeof(DeviceLogprobs),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  // Logprobs of the token the device chose: the twin's, ids exact, values within float rounding
  // (the chosen token's comes from its probability: v - max = log(p) x temperature).
  int with_logprobs = 0;
  for (int r = 0; r < R; ++r) {
    if (draws[r].logprobs_top_n < 0) continue;
    ++with_logprobs;
    const DeviceLogprobs w = ReferenceDeviceLogprobs(edited[r], got[r], draws[r].logprobs_top_n);
    const DeviceLogprobs& g = got_lp[r];
    if (std::isinf(w.logprob)) {
      EXPECT_EQ(g.logprob, w.logprob) << "row " << r;
    } else {
      EXPECT_NEAR(g.logprob, w.logprob, 1e-4 * std::max(1.0f, std::fabs(w.logprob))) << "row " << r;
    }
    ASSERT_EQ(g.count, w.count) << "row " << r;
    for (int t = 0; t < w.count; ++t) {
      EXPECT_EQ(g.ids[t], w.ids[t]) << "row " << r << " entry " << t;
      EXPECT_NEAR(g.values[t], w.values[t], 1e-5 * std::max(1.0f, std::fabs(w.values[t])));
    }
  }
  EXPECT_GT(with_logprobs, 5 * rows_per_kind);
  int differ = 0;
  for (int r = 0; r < R; ++r) {
    if (r >= random_rows) {  // the tie rows and the degenerate ones
      EXPECT_EQ(got[r], want[r]) << "row " << r;
    } else {
      differ += got[r] != want[r];
    }
  }
  EXPECT_LE(differ, std::max(1, random_rows / 1000))
      << differ << " of " << random_rows << " draws differ";
  EXPECT_EQ(LaunchDrawRows(nullptr, d_logits.get(), 1, 0, d_draws.get(), d_offsets.get(),
                           d_edits.get(), d_tokens.get())
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::cuda

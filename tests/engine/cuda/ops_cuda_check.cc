// The RWKV7 ops of engine/cuda/rwkv7_ops.cu, launcher by launcher, against CPU twins: plain loops
// over the same per-element arithmetic (engine/cuda/rwkv7_math.h), so that a whole-model mismatch
// (cuda_model_check.cc) can be traced to one kernel. Built into `cuda_wkv_test` (named *_check.cc:
// see wkv_cuda_check.cc); the argument checks run everywhere, the GPU cases skip without a device.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

constexpr int kHead = 64;           // the head size of the per-head ops
constexpr float kSentinel = -7.0f;  // fills memory past what a launch covers: must stay as it is

// Tolerances, |gpu - twin| <= tol * max(1, |twin|) element by element:
//  - element-wise (one formula per element, the same on both sides; they differ only by the
//    device's expf/tanhf, within 2 ulp, and FMA contraction): 1e-5;
//  - through a reduction (LayerNorm, GroupNorm, kk's L2 norm, the bonus sum: f32 sums in the
//    device's order against the twin's double sums): 1e-4.
// Shift states are copies (f16: one rounding, the host's F32ToF16 being __float2half_rn): exact.
constexpr float kElementTol = 1e-5f;
constexpr float kReductionTol = 1e-4f;

using testing_util::Download;
using testing_util::Random;
using testing_util::Upload;

using testing_util::DeviceState;
using testing_util::ExpectNear;
using testing_util::ExpectSameBits;
using testing_util::OnDevice;
using testing_util::StateValue;
using testing_util::ToState;

// ---- argument checks (no device needed: they fail before any launch) ----

TEST(RwkvOpsLaunchTest, LayerNormRejectsBadSizes) {
  float f = 0;
  auto launch = [&](int n, int C) {
    return LaunchLayerNorm(nullptr, &f, nullptr, n, C, &f, &f, math::kLnEps, &f);
  };
  EXPECT_EQ(launch(-1, 64).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, -5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 64).ok());  // no rows: nothing to do
}

TEST(RwkvOpsLaunchTest, TokenShiftRejectsBadSizes) {
  float f = 0;
  int32_t i = -1;
  const __half h{};
  for (const bool half : {false, true}) {
    auto launch = [&](int R, int C, int mixes) {
      return half ? LaunchTokenShift(nullptr, &f, R, C, &i, &h, C, &f, mixes, &f)
                  : LaunchTokenShift(nullptr, &f, R, C, &i, &f, C, &f, mixes, &f);
    };
    EXPECT_EQ(launch(-1, 64, 1).code(), absl::StatusCode::kInvalidArgument) << half;
    EXPECT_EQ(launch(1, 0, 1).code(), absl::StatusCode::kInvalidArgument) << half;
    EXPECT_EQ(launch(1, 64, 0).code(), absl::StatusCode::kInvalidArgument) << half;
    EXPECT_TRUE(launch(0, 64, 6).ok()) << half;
  }
}

TEST(RwkvOpsLaunchTest, StoreShiftRejectsBadSizes) {
  float f = 0;
  int32_t i = 0;
  __half h{};
  for (const bool half : {false, true}) {
    auto launch = [&](int C, int E) {
      return half ? LaunchStoreShift(nullptr, &f, C, &i, &i, E, &h, C)
                  : LaunchStoreShift(nullptr, &f, C, &i, &i, E, &f, C);
    };
    EXPECT_EQ(launch(64, -1).code(), absl::StatusCode::kInvalidArgument) << half;
    EXPECT_EQ(launch(0, 1).code(), absl::StatusCode::kInvalidArgument) << half;
    EXPECT_TRUE(launch(64, 0).ok()) << half;
  }
}

TEST(RwkvOpsLaunchTest, ActivationRejectsANegativeCount) {
  float f = 0;
  for (const Activation a : {Activation::kTanh, Activation::kSigmoid, Activation::kReluSquare}) {
    EXPECT_EQ(LaunchActivation(nullptr, a, &f, -1).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(LaunchActivation(nullptr, a, &f, 0).ok());
  }
}

TEST(RwkvOpsLaunchTest, PrepareWkvRejectsBadSizesAndMissingInputs) {
  float f = 0;
  auto launch = [&](int R, int C, const float* v_gate, const float* v0, bool first) {
    return LaunchPrepareWkv(nullptr, R, C, &f, &f, &f, &f, &f, &f, &f, &f, &f, &f, v_gate, v0,
                            first);
  };
  for (const int C : {0, -64, 100, 65}) {  // not a positive multiple of the head size
    EXPECT_EQ(launch(1, C, &f, &f, false).code(), absl::StatusCode::kInvalidArgument) << C;
  }
  EXPECT_EQ(launch(-1, 64, &f, &f, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 64, nullptr, &f, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 64, &f, nullptr, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(0, 64, nullptr, nullptr, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 128, nullptr, nullptr, true).ok());  // first layer: v_gate, v0 unused
  EXPECT_TRUE(launch(0, 128, &f, &f, false).ok());
}

TEST(RwkvOpsLaunchTest, GroupNormGateRejectsBadSizes) {
  float f = 0;
  auto launch = [&](int R, int C) {
    return LaunchGroupNormGate(nullptr, R, C, &f, &f, &f, &f, &f, &f, &f, &f);
  };
  for (const int C : {0, -64, 100, 65}) {
    EXPECT_EQ(launch(1, C).code(), absl::StatusCode::kInvalidArgument) << C;
  }
  EXPECT_EQ(launch(-1, 64).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 192).ok());
}

// ---- LayerNorm ----

struct LayerNormCase {
  std::string name;
  int in_rows;  // rows of `in`
  int C;
  std::vector<int32_t> rows;  // the rows of `in` to normalise, in order; empty: rows = null
  bool in_place;              // out == in (rows null)
  float eps;
};

void PrintTo(const LayerNormCase& c, std::ostream* os) { *os << c.name; }

class LayerNormVsCpuTest : public OnDevice<testing::TestWithParam<LayerNormCase>> {};

TEST_P(LayerNormVsCpuTest, MatchesTwin) {
  const LayerNormCase& c = GetParam();
  const int C = c.C;
  const int n = c.rows.empty() ? c.in_rows : static_cast<int>(c.rows.size());
  ASSERT_TRUE(!c.in_place || c.rows.empty());
  std::mt19937 g(11);
  // Rows centred on 3 so that a missing mean shows; one sentinel row past them.
  std::vector<float> in = Random(static_cast<size_t>(c.in_rows) * C, g, 1.0f, 5.0f);
  in.resize(in.size() + C, kSentinel);
  const std::vector<float> w = Random(C, g, -1.5f, 1.5f), b = Random(C, g, -1.0f, 1.0f);
  std::vector<float> out(static_cast<size_t>(n + 1) * C, kSentinel);  // n rows and a sentinel

  // Twin: row r of the output normalises row rows[r] (or r) of the input.
  std::vector<float> want = c.in_place ? in : out;
  for (int r = 0; r < n; ++r) {
    const float* x = in.data() + static_cast<int64_t>(c.rows.empty() ? r : c.rows[r]) * C;
    double sum = 0;
    for (int j = 0; j < C; ++j) sum += x[j];
    const double mean = sum / C;
    double ss = 0;
    for (int j = 0; j < C; ++j) ss += (x[j] - mean) * (x[j] - mean);
    const float inv = math::InvStd(static_cast<float>(ss / C), c.eps);
    for (int j = 0; j < C; ++j) {
      want[static_cast<int64_t>(r) * C + j] = static_cast<float>((x[j] - mean) * inv * w[j] + b[j]);
    }
  }

  DeviceBuffer<float> d_in = Upload(in), d_w = Upload(w), d_b = Upload(b), d_out = Upload(out);
  DeviceBuffer<int32_t> d_rows = c.rows.empty() ? nullptr : Upload(c.rows);
  ASSERT_FALSE(HasFailure());
  float* dst = c.in_place ? d_in.get() : d_out.get();
  const absl::Status launched = LaunchLayerNorm(stream_.get(), d_in.get(), d_rows.get(), n, C,
                                                d_w.get(), d_b.get(), c.eps, dst);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  ExpectNear(Download(c.in_place ? d_in : d_out, want.size()), want, kReductionTol, "out");
  if (!c.in_place) ExpectNear(Download(d_in, in.size()), in, 0.0f, "in (read only)");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LayerNormVsCpuTest,
    testing::Values(LayerNormCase{"RowsInOrder", 4, 768, {}, false, math::kLnEps},
                    LayerNormCase{"WidthNotAMultipleOfTheBlock", 3, 1000, {}, false, math::kLnEps},
                    LayerNormCase{"NarrowerThanAWarp", 5, 7, {}, false, math::kLnEps},
                    LayerNormCase{"OneChannel", 2, 1, {}, false, math::kLnEps},  // out = b
                    // ln_out's gather: some rows, one twice, padding reading row 0.
                    LayerNormCase{"GatheredRows", 6, 300, {5, 0, 5, 2, 0}, false, math::kLnEps},
                    LayerNormCase{"InPlace", 7, 777, {}, true, math::kLnEps},  // ln0: in == out
                    LayerNormCase{"WideRowsOtherEps", 2, 4100, {}, false, math::kGroupNormEps},
                    // 16 rows or more, C a multiple of 4: four channels at a time (a thread
                    // holding 1 to 4 float4s, or none), or one at a time when too wide.
                    LayerNormCase{"ManyRows", 18, 768, {}, false, math::kLnEps},
                    LayerNormCase{"ManyRowsNarrow", 16, 64, {}, false, math::kLnEps},
                    LayerNormCase{"ManyRowsWidest", 16, 4096, {}, false, math::kLnEps},
                    LayerNormCase{"ManyRowsInPlace", 17, 2048, {}, true, math::kLnEps},
                    LayerNormCase{"ManyGatheredRows",
                                  4,
                                  1024,
                                  {3, 0, 1, 2, 2, 0, 3, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0},
                                  false,
                                  math::kLnEps},
                    LayerNormCase{
                        "ManyRowsTooWideForRegisters", 16, 4160, {}, false, math::kLnEps}),
    [](const testing::TestParamInfo<LayerNormCase>& info) { return info.param.name; });

// ---- token shift and shift store ----

// A step's sequences as cuda_model.cc lays them out: rows in sequence order; row r's predecessor
// prev[r] is the previous row, or -slot - 1 for a sequence's first row; a padding sequence (slot
// -1, one row) is its own predecessor. Its last row last[e] goes to slot slots[e] (skipped < 0).
struct ShiftCase {
  std::string name;
  int C;
  std::vector<int> lengths;    // rows per sequence
  std::vector<int32_t> slots;  // slot per sequence, distinct, not in order; -1: padding
  int num_slots;
  int mixes;  // lerp vectors (6 in the time mix, 1 in the channel mix)
  // The states 16-byte aligned in the pool (as the model's are): the token shift then takes four
  // channels at a time where C allows; else they sit at odd offsets and strides.
  bool aligned = false;
};

enum class StateType { kF32, kF16 };

void PrintTo(const ShiftCase& c, std::ostream* os) { *os << c.name; }
void PrintTo(StateType t, std::ostream* os) { *os << (t == StateType::kF16 ? "f16" : "f32"); }

struct ShiftLayout {
  int R = 0;
  std::vector<int32_t> prev, last;
};

ShiftLayout LayOut(const ShiftCase& c) {
  ShiftLayout l;
  for (size_t e = 0; e < c.lengths.size(); ++e) {
    const int first = l.R;
    for (int j = 0; j < c.lengths[e]; ++j, ++l.R) {
      l.prev.push_back(c.slots[e] < 0 ? l.R : (j == 0 ? -c.slots[e] - 1 : l.R - 1));
    }
    l.last.push_back(first + c.lengths[e] - 1);
  }
  return l;
}

// The shift state sits at an offset in each slot of a padded pool (as the channel mix's, after
// the time mix's shift and WKV state): the kernels must use both the base and the stride.
// (ShiftCase::aligned: at offset 8 of slots of 2C + 8 elements.)
int64_t ShiftOffset(const ShiftCase& c) { return c.aligned ? 8 : 3; }
int64_t SlotStride(const ShiftCase& c) {
  return 2 * static_cast<int64_t>(c.C) + (c.aligned ? 8 : 5);
}
constexpr int64_t kShiftOffset = 3;
int64_t SlotStride(int C) { return 2 * static_cast<int64_t>(C) + 5; }

std::string ShiftCaseName(const testing::TestParamInfo<std::tuple<ShiftCase, StateType>>& info) {
  return std::get<0>(info.param).name +
         (std::get<1>(info.param) == StateType::kF16 ? "_F16State" : "_F32State");
}

class TokenShiftVsCpuTest
    : public OnDevice<testing::TestWithParam<std::tuple<ShiftCase, StateType>>> {
 protected:
  template <typename S>
  void Run(const ShiftCase& c);
};

template <typename S>
void TokenShiftVsCpuTest::Run(const ShiftCase& c) {
  const int C = c.C;
  const ShiftLayout l = LayOut(c);
  const int R = l.R;
  const int64_t stride = SlotStride(c), offset = ShiftOffset(c);
  std::mt19937 g(21);
  const std::vector<float> x = Random(static_cast<size_t>(R) * C, g, -2.0f, 2.0f);
  const std::vector<float> mix = Random(static_cast<size_t>(c.mixes) * C, g, 0.0f, 1.0f);
  std::vector<S> pool(static_cast<size_t>(c.num_slots) * stride);
  for (S& s : pool) s = ToState<S>(std::uniform_real_distribution<float>(-2.0f, 2.0f)(g));
  const int64_t plane = static_cast<int64_t>(R) * C;
  std::vector<float> out(c.mixes * plane + C, kSentinel);  // [mixes][R][C], a sentinel row

  // Twin.
  std::vector<float> want = out;
  for (int r = 0; r < R; ++r) {
    const int32_t p = l.prev[r];
    for (int j = 0; j < C; ++j) {
      const float xc = x[static_cast<int64_t>(r) * C + j];
      const float pc = p >= 0 ? x[static_cast<int64_t>(p) * C + j]
                              : StateValue(pool[offset + (-p - 1) * stride + j]);
      for (int i = 0; i < c.mixes; ++i) {
        want[i * plane + static_cast<int64_t>(r) * C + j] =
            math::TokenShift(xc, pc, mix[static_cast<int64_t>(i) * C + j]);
      }
    }
  }

  DeviceBuffer<float> d_x = Upload(x), d_mix = Upload(mix), d_out = Upload(out);
  DeviceBuffer<S> d_pool = Upload(pool);
  DeviceBuffer<int32_t> d_prev = Upload(l.prev);
  ASSERT_FALSE(HasFailure());
  const absl::Status launched =
      LaunchTokenShift(stream_.get(), d_x.get(), R, C, d_prev.get(),
                       DeviceState(static_cast<const S*>(d_pool.get())) + offset, stride,
                       d_mix.get(), c.mixes, d_out.get());
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  ExpectNear(Download(d_out, out.size()), want, kElementTol, "out");
  ExpectSameBits(Download(d_pool, pool.size()), pool, "state pool (read only)");
}

TEST_P(TokenShiftVsCpuTest, MatchesTwin) {
  const auto& [c, type] = GetParam();
  if (type == StateType::kF16) {
    Run<uint16_t>(c);
  } else {
    Run<float>(c);
  }
}

class StoreShiftVsCpuTest
    : public OnDevice<testing::TestWithParam<std::tuple<ShiftCase, StateType>>> {
 protected:
  template <typename S>
  void Run(const ShiftCase& c);
};

template <typename S>
void StoreShiftVsCpuTest::Run(const ShiftCase& c) {
  const int C = c.C;
  const ShiftLayout l = LayOut(c);
  const int R = l.R, E = static_cast<int>(c.slots.size());
  const int64_t stride = SlotStride(c), offset = ShiftOffset(c);
  std::mt19937 g(31);
  std::vector<float> x = Random(static_cast<size_t>(R) * C, g, -2.0f, 2.0f);
  // f16 rounding's corner cases in every row: ties to even (down, up), an f16 subnormal, a value
  // rounding to the smallest subnormal, the largest finite f16.
  const float corners[] = {1.0f + 0x1p-11f, 1.0f + 0x3p-11f, -1e-6f, 3e-8f, 65504.0f};
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < std::min<int>(C, std::size(corners)); ++j) {
      x[static_cast<int64_t>(r) * C + j] = corners[j];
    }
  }
  std::vector<S> pool(static_cast<size_t>(c.num_slots) * stride);
  for (S& s : pool) s = ToState<S>(std::uniform_real_distribution<float>(-2.0f, 2.0f)(g));

  // Twin: slot slots[e] gets row last[e]; padding (slots[e] < 0) stores nothing.
  std::vector<S> want = pool;
  for (int e = 0; e < E; ++e) {
    if (c.slots[e] < 0) continue;
    for (int j = 0; j < C; ++j) {
      want[offset + c.slots[e] * stride + j] =
          ToState<S>(x[static_cast<int64_t>(l.last[e]) * C + j]);
    }
  }

  DeviceBuffer<float> d_x = Upload(x);
  DeviceBuffer<S> d_pool = Upload(pool);
  DeviceBuffer<int32_t> d_last = Upload(l.last), d_slots = Upload(c.slots);
  ASSERT_FALSE(HasFailure());
  const absl::Status launched =
      LaunchStoreShift(stream_.get(), d_x.get(), C, d_last.get(), d_slots.get(), E,
                       DeviceState(d_pool.get()) + offset, stride);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  // Other slots, padding sequences' and the rest of each slot must be untouched.
  ExpectSameBits(Download(d_pool, pool.size()), want, "state pool");
}

TEST_P(StoreShiftVsCpuTest, MatchesTwin) {
  const auto& [c, type] = GetParam();
  if (type == StateType::kF16) {
    Run<uint16_t>(c);
  } else {
    Run<float>(c);
  }
}

// The decode steps' fused LayerNorm + token shift + shift store against the three kernels it
// replaces, run on the same inputs (each of them checked against its CPU twin above): one row per
// sequence, padding rows (no slot: their own predecessor, nothing stored), both state types; 6144
// channels: more than the 4 per thread whose state the kernel loads before its sums.
class NormShiftTest : public OnDevice<testing::TestWithParam<std::tuple<int, StateType>>> {
 protected:
  template <typename S>
  void Run(int C);
};

template <typename S>
void NormShiftTest::Run(int C) {
  const std::vector<int32_t> slots = {3, -1, 0, 2, -1, 1};
  const int R = static_cast<int>(slots.size()), num_slots = 4;
  const int64_t stride = SlotStride(C);
  std::mt19937 g(41);
  const std::vector<float> x = Random(static_cast<size_t>(R) * C, g, -3.0f, 3.0f);
  const std::vector<float> w = Random(C, g, 0.5f, 1.5f), b = Random(C, g, -0.5f, 0.5f);
  std::vector<S> pool(static_cast<size_t>(num_slots) * stride);
  for (S& v : pool) v = ToState<S>(std::uniform_real_distribution<float>(-2.0f, 2.0f)(g));
  for (const int mixes : {6, 1}) {
    const std::vector<float> mix = Random(static_cast<size_t>(mixes) * C, g, 0.0f, 1.0f);
    const std::vector<float> out(static_cast<size_t>(mixes) * R * C, kSentinel);
    std::vector<int32_t> prev(R), last(R);
    for (int r = 0; r < R; ++r) {
      prev[r] = slots[r] >= 0 ? -slots[r] - 1 : r;
      last[r] = r;
    }
    DeviceBuffer<float> d_x = Upload(x), d_w = Upload(w), d_b = Upload(b), d_mix = Upload(mix);
    DeviceBuffer<float> d_xn = Upload(x), d_want = Upload(out), d_got = Upload(out);
    DeviceBuffer<S> d_want_pool = Upload(pool), d_got_pool = Upload(pool);
    DeviceBuffer<int32_t> d_slots = Upload(slots), d_prev = Upload(prev), d_last = Upload(last);
    ASSERT_FALSE(HasFailure());
    cudaStream_t st = stream_.get();
    ASSERT_TRUE(
        LaunchLayerNorm(st, d_x.get(), nullptr, R, C, d_w.get(), d_b.get(), 1e-5f, d_xn.get())
            .ok());
    ASSERT_TRUE(
        LaunchTokenShift(st, d_xn.get(), R, C, d_prev.get(),
                         DeviceState(static_cast<const S*>(d_want_pool.get())) + kShiftOffset,
                         stride, d_mix.get(), mixes, d_want.get())
            .ok());
    ASSERT_TRUE(LaunchStoreShift(st, d_xn.get(), C, d_last.get(), d_slots.get(), R,
                                 DeviceState(d_want_pool.get()) + kShiftOffset, stride)
                    .ok());
    const absl::Status fused = LaunchNormShift(
        st, d_x.get(), R, C, d_w.get(), d_b.get(), 1e-5f, d_slots.get(),
        DeviceState(d_got_pool.get()) + kShiftOffset, stride, d_mix.get(), mixes, d_got.get());
    ASSERT_TRUE(fused.ok()) << fused;
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    ExpectNear(Download(d_got, out.size()), Download(d_want, out.size()), kElementTol, "out");
    std::vector<float> got_pool, want_pool;
    for (const S v : Download(d_got_pool, pool.size())) got_pool.push_back(StateValue(v));
    for (const S v : Download(d_want_pool, pool.size())) want_pool.push_back(StateValue(v));
    // Within an f16 rounding step where the state is f16 (n may differ in its last float bit).
    ExpectNear(got_pool, want_pool, sizeof(S) == 2 ? 4e-3f : kElementTol, "state pool");
    pool = Download(d_got_pool, pool.size());  // the next round starts from the stored states
  }
  const float f = 0;
  const int32_t i = 0;
  float* state = nullptr;
  float out = 0;  // a valid out: each width is refused for being too wide, not for a missing out
  // Wider than the 48 KB of shared memory hold (the row and the kernel's 32-float scratch).
  for (int wide : {20000, 12257}) {
    EXPECT_EQ(
        LaunchNormShift(nullptr, &f, 1, wide, &f, &f, 1e-5f, &i, state, 1, &f, 1, &out).code(),
        absl::StatusCode::kInvalidArgument)
        << wide;
  }
}

TEST_P(NormShiftTest, MatchesLayerNormThenTokenShiftThenStoreShift) {
  const auto& [C, type] = GetParam();
  if (type == StateType::kF16) {
    Run<uint16_t>(C);
  } else {
    Run<float>(C);
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, NormShiftTest,
                         testing::Combine(testing::Values(768, 1000, 20, 4096, 6144),
                                          testing::Values(StateType::kF32, StateType::kF16)));

const ShiftCase kShiftCases[] = {
    {"DecodeWithPadding", 768, {1, 1, 1, 1, 1}, {3, 0, -1, 2, -1}, 4, 6},
    {"PrefillWidthNotAMultipleOfTheBlock", 1000, {5, 1, 9}, {1, 4, 0}, 5, 6},
    {"ChannelMixOneLerp", 300, {2, 3, 1}, {2, 0, -1}, 3, 1},
    {"NarrowerThanAWarp", 20, {3, 2}, {1, 0}, 2, 2},
    // Four channels at a time: a prefill step's shape, and C not a multiple of the block's 1024
    // channels a pass; the same layout with C not a multiple of 4 takes one at a time.
    {"AlignedPrefill", 2048, {7, 1, 12}, {2, 0, 1}, 3, 6, true},
    {"AlignedChannelMix", 1100, {4, 3}, {1, 0}, 2, 1, true},
    {"AlignedOddWidth", 302, {3, 2}, {0, 1}, 2, 6, true},
};

INSTANTIATE_TEST_SUITE_P(Cases, TokenShiftVsCpuTest,
                         testing::Combine(testing::ValuesIn(kShiftCases),
                                          testing::Values(StateType::kF32, StateType::kF16)),
                         ShiftCaseName);
INSTANTIATE_TEST_SUITE_P(Cases, StoreShiftVsCpuTest,
                         testing::Combine(testing::ValuesIn(kShiftCases),
                                          testing::Values(StateType::kF32, StateType::kF16)),
                         ShiftCaseName);

// A prefill step's LayerNorm + token shift + shift store in two kernels (LaunchNormShiftRows)
// against the three it replaces on the same inputs (each checked against its CPU twin above): the
// same bits in the mixes, f32 or bf16, and in the states, where LayerNorm takes its many-rows
// form (16 rows or more, C a multiple of 4, aligned states). A padding sequence (its rows their
// own predecessors, nothing stored), a sequence of one row, the widest C of the form.
class NormShiftRowsTest
    : public OnDevice<testing::TestWithParam<std::tuple<ShiftCase, StateType, bool>>> {
 protected:
  template <typename S>
  void Run(const ShiftCase& c, bool bf16_out);
};

template <typename S>
void NormShiftRowsTest::Run(const ShiftCase& c, bool bf16_out) {
  const int C = c.C;
  const ShiftLayout l = LayOut(c);
  const int R = l.R, E = static_cast<int>(c.slots.size());
  ASSERT_TRUE(NormShiftRowsFits(R, C));
  const int64_t stride = SlotStride(c), offset = ShiftOffset(c);
  std::mt19937 g(53);
  const std::vector<float> x = Random(static_cast<size_t>(R) * C, g, -3.0f, 3.0f);
  const std::vector<float> w = Random(C, g, 0.5f, 1.5f), b = Random(C, g, -0.5f, 0.5f);
  const std::vector<float> mix = Random(static_cast<size_t>(c.mixes) * C, g, 0.0f, 1.0f);
  std::vector<S> pool(static_cast<size_t>(c.num_slots) * stride);
  for (S& v : pool) v = ToState<S>(std::uniform_real_distribution<float>(-2.0f, 2.0f)(g));
  const size_t n = static_cast<size_t>(c.mixes) * R * C;
  DeviceBuffer<float> d_x = Upload(x), d_w = Upload(w), d_b = Upload(b), d_mix = Upload(mix);
  DeviceBuffer<float> d_xn = Upload(x), d_want = Upload(std::vector<float>(n, kSentinel)),
                      d_got = Upload(std::vector<float>(n, kSentinel));
  DeviceBuffer<uint16_t> h_want = Upload(std::vector<uint16_t>(n)),
                         h_got = Upload(std::vector<uint16_t>(n));
  DeviceBuffer<S> d_want_pool = Upload(pool), d_got_pool = Upload(pool);
  DeviceBuffer<int32_t> d_slots = Upload(c.slots), d_prev = Upload(l.prev), d_last = Upload(l.last);
  ASSERT_FALSE(HasFailure());
  auto out = [&](DeviceBuffer<float>& f32, DeviceBuffer<uint16_t>& half) {
    return bf16_out ? ActivationsOut::Half(HalfType::kBF16, half.get()) : ActivationsOut(f32.get());
  };
  cudaStream_t st = stream_.get();
  ASSERT_TRUE(
      LaunchLayerNorm(st, d_x.get(), nullptr, R, C, d_w.get(), d_b.get(), 1e-5f, d_xn.get()).ok());
  ASSERT_TRUE(LaunchTokenShift(st, d_xn.get(), R, C, d_prev.get(),
                               DeviceState(static_cast<const S*>(d_want_pool.get())) + offset,
                               stride, d_mix.get(), c.mixes, out(d_want, h_want))
                  .ok());
  ASSERT_TRUE(LaunchStoreShift(st, d_xn.get(), C, d_last.get(), d_slots.get(), E,
                               DeviceState(d_want_pool.get()) + offset, stride)
                  .ok());
  const absl::Status fused = LaunchNormShiftRows(
      st, d_x.get(), R, C, d_w.get(), d_b.get(), 1e-5f, d_prev.get(), d_last.get(), d_slots.get(),
      E, DeviceState(d_got_pool.get()) + offset, stride, d_mix.get(), c.mixes, out(d_got, h_got));
  ASSERT_TRUE(fused.ok()) << fused;
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  if (bf16_out) {
    ExpectSameBits(Download(h_got, n), Download(h_want, n), "out (bf16)");
  } else {
    ExpectSameBits(Download(d_got, n), Download(d_want, n), "out");
  }
  ExpectSameBits(Download(d_got_pool, pool.size()), Download(d_want_pool, pool.size()),
                 "state pool");
  // The form's limits: C a multiple of 4, rows aligned for four channels an access.
  EXPECT_EQ(
      LaunchNormShiftRows(st, d_x.get(), R, C - 2, d_w.get(), d_b.get(), 1e-5f, d_prev.get(),
                          d_last.get(), d_slots.get(), E, DeviceState(d_got_pool.get()) + offset,
                          stride, d_mix.get(), c.mixes, d_got.get())
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      LaunchNormShiftRows(st, d_x.get() + 1, R, C, d_w.get(), d_b.get(), 1e-5f, d_prev.get(),
                          d_last.get(), d_slots.get(), E, DeviceState(d_got_pool.get()) + offset,
                          stride, d_mix.get(), c.mixes, d_got.get())
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_P(NormShiftRowsTest, MatchesLayerNormThenTokenShiftThenStoreShift) {
  const auto& [c, type, bf16_out] = GetParam();
  if (type == StateType::kF16) {
    Run<uint16_t>(c, bf16_out);
  } else {
    Run<float>(c, bf16_out);
  }
}

const ShiftCase kPrefillShiftCases[] = {
    {"TimeMix", 2048, {7, 1, 12}, {2, 0, 1}, 3, 6, true},
    {"ChannelMixWithPadding", 1100, {5, 9, 6}, {1, -1, 0}, 2, 1, true},
    {"Widest", 4096, {10, 7}, {0, 1}, 2, 6, true},
};

INSTANTIATE_TEST_SUITE_P(
    Cases, NormShiftRowsTest,
    testing::Combine(testing::ValuesIn(kPrefillShiftCases),
                     testing::Values(StateType::kF32, StateType::kF16), testing::Bool()),
    [](const testing::TestParamInfo<std::tuple<ShiftCase, StateType, bool>>& info) {
      return std::get<0>(info.param).name +
             (std::get<1>(info.param) == StateType::kF16 ? "_F16State" : "_F32State") +
             (std::get<2>(info.param) ? "_Bf16Out" : "_F32Out");
    });

// ---- activations ----

class ActivationVsCpuTest
    : public OnDevice<testing::TestWithParam<std::tuple<Activation, int64_t>>> {};

std::string ActivationName(Activation f) {
  switch (f) {
    case Activation::kTanh:
      return "Tanh";
    case Activation::kSigmoid:
      return "Sigmoid";
    case Activation::kReluSquare:
      return "ReluSquare";
  }
  return "?";
}

float ActivationTwin(Activation f, float v) {
  switch (f) {
    case Activation::kTanh:
      return std::tanh(v);
    case Activation::kSigmoid:
      return math::Sigmoid(v);
    case Activation::kReluSquare:
      return math::ReluSquare(v);
  }
  return NAN;
}

TEST_P(ActivationVsCpuTest, MatchesTwin) {
  const auto [f, n] = GetParam();
  std::mt19937 g(41);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> x(n + 64, kSentinel);  // 64 sentinels past the n elements
  for (int64_t i = 0; i < n; ++i) x[i] = normal(g);
  const float special[] = {0.0f,   -0.0f,   1e-30f,   -1e-30f,   20.0f, -20.0f,
                           100.0f, -100.0f, INFINITY, -INFINITY, NAN};
  for (int64_t i = 0; i < std::min<int64_t>(n, std::size(special)); ++i) x[i] = special[i];

  std::vector<float> want = x;
  for (int64_t i = 0; i < n; ++i) want[i] = ActivationTwin(f, x[i]);

  DeviceBuffer<float> d_x = Upload(x);
  ASSERT_FALSE(HasFailure());
  const absl::Status launched = LaunchActivation(stream_.get(), f, d_x.get(), n);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  ExpectNear(Download(d_x, x.size()), want, kElementTol, "x");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ActivationVsCpuTest,
    testing::Combine(testing::Values(Activation::kTanh, Activation::kSigmoid,
                                     Activation::kReluSquare),
                     // One element; not a multiple of the block; more than the grid's 65535
                     // blocks of 256 cover in one pass (the grid-stride loop).
                     testing::Values(int64_t{1}, int64_t{1000}, int64_t{65535} * 256 + 777)),
    [](const testing::TestParamInfo<std::tuple<Activation, int64_t>>& info) {
      return ActivationName(std::get<0>(info.param)) + "_" +
             std::to_string(std::get<1>(info.param));
    });

// ---- the per-head ops ----

struct HeadCase {
  std::string name;
  int R;  // rows
  int H;  // heads: C = 64 H
  bool first_layer;
};

void PrintTo(const HeadCase& c, std::ostream* os) { *os << c.name; }

std::string HeadCaseName(const testing::TestParamInfo<HeadCase>& info) { return info.param.name; }

// R rows of C values in [lo, hi), then a sentinel row.
std::vector<float> Rows(int R, int C, std::mt19937& g, float lo, float hi) {
  std::vector<float> v = Random(static_cast<size_t>(R) * C, g, lo, hi);
  v.resize(v.size() + C, kSentinel);
  return v;
}

class PrepareWkvVsCpuTest : public OnDevice<testing::TestWithParam<HeadCase>> {};

TEST_P(PrepareWkvVsCpuTest, MatchesTwin) {
  const HeadCase& c = GetParam();
  const int R = c.R, C = c.H * kHead;
  std::mt19937 g(51);
  // Rows (with a sentinel row each): the LoRA outputs w, a, v_gate, the key and value.
  std::vector<float> w = Rows(R, C, g, -3.0f, 3.0f), a = Rows(R, C, g, -3.0f, 3.0f),
                     k = Rows(R, C, g, -1.0f, 1.0f), v = Rows(R, C, g, -1.0f, 1.0f),
                     v_first = Rows(R, C, g, -1.0f, 1.0f), v_gate = Rows(R, C, g, -3.0f, 3.0f);
  std::vector<float> kk(static_cast<size_t>(R + 1) * C, kSentinel);         // output only
  if (c.first_layer) std::fill(v_first.begin(), v_first.end(), kSentinel);  // output only
  // A zero key head (the last row's last head; none when that is the only head): kk's norm hits
  // its eps, kk stays 0 (no NaN).
  if (R * c.H > 1) std::fill_n(k.begin() + (static_cast<int64_t>(R) * C - kHead), kHead, 0.0f);
  const std::vector<float> w0 = Random(C, g, -2.0f, 2.0f), a0 = Random(C, g, -1.0f, 1.0f),
                           k_k = Random(C, g, -1.0f, 1.0f), k_a = Random(C, g, 0.0f, 1.0f),
                           v0 = Random(C, g, -1.0f, 1.0f);

  // Twin, row by row and head by head, on copies.
  std::vector<float> w_want = w, a_want = a, k_want = k, kk_want = kk, v_want = v,
                     v_first_want = v_first;
  for (int r = 0; r < R; ++r) {
    for (int h = 0; h < c.H; ++h) {
      const int64_t row = static_cast<int64_t>(r) * C;
      double ss = 0;
      for (int j = 0; j < kHead; ++j) {
        const int cc = h * kHead + j;
        const float q = k[row + cc] * k_k[cc];
        ss += static_cast<double>(q) * q;
      }
      const float inv = math::InvL2(static_cast<float>(ss));
      for (int j = 0; j < kHead; ++j) {
        const int cc = h * kHead + j;
        const int64_t i = row + cc;
        w_want[i] = math::Decay(w[i] + w0[cc]);
        const float av = math::Sigmoid(a[i] + a0[cc]);
        a_want[i] = av;
        kk_want[i] = k[i] * k_k[cc] * inv;
        k_want[i] = math::KeyWithIclr(k[i], av, k_a[cc]);
        if (c.first_layer) {
          v_first_want[i] = v[i];
        } else {
          v_want[i] = math::ValueResidual(v[i], v_first[i], v_gate[i] + v0[cc]);
        }
      }
    }
  }

  DeviceBuffer<float> d_w = Upload(w), d_a = Upload(a), d_k = Upload(k), d_kk = Upload(kk),
                      d_v = Upload(v), d_v_first = Upload(v_first), d_v_gate = Upload(v_gate),
                      d_w0 = Upload(w0), d_a0 = Upload(a0), d_k_k = Upload(k_k),
                      d_k_a = Upload(k_a), d_v0 = Upload(v0);
  ASSERT_FALSE(HasFailure());
  // The first layer passes no v_gate and v0: the header says they are ignored then.
  const absl::Status launched =
      LaunchPrepareWkv(stream_.get(), R, C, d_w.get(), d_w0.get(), d_a.get(), d_a0.get(), d_k.get(),
                       d_kk.get(), d_k_k.get(), d_k_a.get(), d_v.get(), d_v_first.get(),
                       c.first_layer ? nullptr : d_v_gate.get(),
                       c.first_layer ? nullptr : d_v0.get(), c.first_layer);
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  ExpectNear(Download(d_w, w.size()), w_want, kElementTol, "w");
  ExpectNear(Download(d_a, a.size()), a_want, kElementTol, "a");
  ExpectNear(Download(d_k, k.size()), k_want, kElementTol, "k");
  ExpectNear(Download(d_kk, kk.size()), kk_want, kReductionTol, "kk");
  ExpectNear(Download(d_v, v.size()), v_want, kElementTol, "v");
  ExpectNear(Download(d_v_first, v_first.size()), v_first_want, kElementTol, "v_first");
  ExpectNear(Download(d_v_gate, v_gate.size()), v_gate, 0.0f, "v_gate (read only)");
}

INSTANTIATE_TEST_SUITE_P(Cases, PrepareWkvVsCpuTest,
                         testing::Values(HeadCase{"OneRowOneHeadFirstLayer", 1, 1, true},
                                         HeadCase{"ThreeHeadsFirstLayer", 5, 3, true},
                                         HeadCase{"ThreeHeadsLaterLayer", 5, 3, false},
                                         HeadCase{"TwelveHeadsLaterLayer", 17, 12, false}),
                         HeadCaseName);

class GroupNormGateVsCpuTest : public OnDevice<testing::TestWithParam<HeadCase>> {};

TEST_P(GroupNormGateVsCpuTest, MatchesTwin) {
  const HeadCase& c = GetParam();
  const int R = c.R, C = c.H * kHead;
  std::mt19937 g(61);
  // y centred on 2.5 so that a missing mean shows; one constant head (the last row's last head;
  // none when that is the only head): variance 0, the normed values are exactly 0 (gn_b remains),
  // only eps keeps it finite.
  std::vector<float> y = Rows(R, C, g, 1.0f, 4.0f);
  if (R * c.H > 1) std::fill_n(y.begin() + (static_cast<int64_t>(R) * C - kHead), kHead, 0.3f);
  const std::vector<float> r = Rows(R, C, g, -1.0f, 1.0f), k = Rows(R, C, g, -1.0f, 1.0f),
                           v = Rows(R, C, g, -1.0f, 1.0f), gate = Rows(R, C, g, -1.0f, 1.0f);
  const std::vector<float> gn_w = Random(C, g, -1.5f, 1.5f), gn_b = Random(C, g, -1.0f, 1.0f),
                           r_k = Random(C, g, -1.0f, 1.0f);

  // Twin, row by row and head by head.
  std::vector<float> want = y;
  for (int row = 0; row < R; ++row) {
    for (int h = 0; h < c.H; ++h) {
      const int64_t o = static_cast<int64_t>(row) * C + h * kHead;
      double sum = 0, bonus = 0;
      for (int j = 0; j < kHead; ++j) {
        sum += y[o + j];
        bonus += static_cast<double>(r[o + j]) * k[o + j] * r_k[h * kHead + j];
      }
      const double mean = sum / kHead;
      double ss = 0;
      for (int j = 0; j < kHead; ++j) ss += (y[o + j] - mean) * (y[o + j] - mean);
      const float inv = math::InvStd(static_cast<float>(ss / kHead), math::kGroupNormEps);
      for (int j = 0; j < kHead; ++j) {
        const int cc = h * kHead + j;
        const float normed = static_cast<float>((y[o + j] - mean) * inv * gn_w[cc] + gn_b[cc]);
        want[o + j] = math::GatedOutput(normed, static_cast<float>(bonus), v[o + j], gate[o + j]);
      }
    }
  }

  DeviceBuffer<float> d_y = Upload(y), d_r = Upload(r), d_k = Upload(k), d_v = Upload(v),
                      d_g = Upload(gate), d_gn_w = Upload(gn_w), d_gn_b = Upload(gn_b),
                      d_r_k = Upload(r_k);
  ASSERT_FALSE(HasFailure());
  const absl::Status launched =
      LaunchGroupNormGate(stream_.get(), R, C, d_y.get(), d_gn_w.get(), d_gn_b.get(), d_r.get(),
                          d_k.get(), d_r_k.get(), d_v.get(), d_g.get());
  ASSERT_TRUE(launched.ok()) << launched;
  ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
  ExpectNear(Download(d_y, y.size()), want, kReductionTol, "y");
}

INSTANTIATE_TEST_SUITE_P(Cases, GroupNormGateVsCpuTest,
                         testing::Values(HeadCase{"OneRowOneHead", 1, 1, false},
                                         HeadCase{"ThreeHeads", 4, 3, false},
                                         HeadCase{"TwelveHeads", 9, 12, false}),
                         HeadCaseName);

}  // namespace
}  // namespace modrwkv::cuda

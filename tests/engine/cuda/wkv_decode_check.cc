// engine/cuda/wkv_decode.cu, the fused time-mixing core of a decode step, against the three
// kernels it fuses launched one after another (LaunchPrepareWkv, LaunchWkv7 walking one token,
// LaunchGroupNormGate), each of which is tested against its CPU twin (ops_cuda_check.cc,
// wkv_cuda_check.cc); and with its LoRA up-projections (LoraUp) against the few-row product
// kernel's (LaunchGemvHalfGroup, gemv against its CPU twin in ops_cuda_check.cc) followed by the
// kernel without them. Built into `cuda_wkv_test`; the GPU cases skip without a device.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_decode.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"
#include "tests/engine/cuda/time_mix_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::DeviceState;
using testing_util::Download;
using testing_util::ExpectNear;
using testing_util::OnDevice;
using testing_util::Random;
using testing_util::RandomParams;
using testing_util::StateType;
using testing_util::StateValue;
using testing_util::ToState;
using testing_util::Upload;

constexpr int kHead = 64;
// The same float operations on both sides: equal up to the compiler's FMA contraction.
constexpr float kTol = 1e-5f;

TEST(Wkv7DecodeLaunchTest, RejectsBadShapesAndMissingInputs) {
  // 16-byte aligned, as a state pool must be: each case is then refused for what it names, not
  // for the pool's alignment (checked before the pointers).
  alignas(16) float f = 0;
  int32_t i = 0;
  const TimeMixRows rows{&f, &f, &f, &f, &f, &f, &f, &f};
  const TimeMixParams params{&f, &f, &f, &f, &f, &f, &f, &f};
  auto launch = [&](int B, int H, int64_t head_stride, int64_t slot_stride, const TimeMixRows& r,
                    const TimeMixParams& p, bool first) {
    return LaunchWkv7Decode(nullptr, &f, &i, B, H, slot_stride, head_stride, r, p, first, &f);
  };
  const int64_t hs = kHead * kHead;
  EXPECT_EQ(launch(1, 0, hs, hs, rows, params, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(-1, 1, hs, hs, rows, params, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 2, hs, hs, rows, params, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 1, 100, hs, rows, params, true).code(), absl::StatusCode::kInvalidArgument);
  TimeMixRows no_gate = rows;
  no_gate.v_gate = nullptr;
  EXPECT_EQ(launch(1, 1, hs, hs, no_gate, params, false).code(),
            absl::StatusCode::kInvalidArgument);  // a later layer needs v_gate
  TimeMixParams no_bias = params;
  no_bias.gn_b = nullptr;
  EXPECT_EQ(launch(1, 1, hs, hs, rows, no_bias, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 2, hs, 2 * hs, rows, params, true).ok());  // empty batch: nothing to do
}

struct DecodeCase {
  std::string name;
  std::vector<int32_t> slots;  // a sequence's slot; -1: padding
  int H;
  int num_slots;
  bool first_layer;
};

void PrintTo(const DecodeCase& c, std::ostream* os) { *os << c.name; }

class Wkv7DecodeTest : public OnDevice<testing::TestWithParam<std::tuple<DecodeCase, StateType>>> {
};

template <typename S>
void CompareWithTheSeparateKernels(const DecodeCase& c, cudaStream_t stream) {
  const int B = static_cast<int>(c.slots.size()), H = c.H, C = H * kHead;
  const int64_t head_stride = kHead * kHead, slot_stride = H * head_stride + 64;
  const size_t n = static_cast<size_t>(B) * C;
  std::mt19937 g(2026);
  const std::vector<float> r = Random(n, g, -1, 1), w = Random(n, g, -3, 3),
                           a = Random(n, g, -3, 3), k = Random(n, g, -1, 1),
                           v = Random(n, g, -1, 1), v_first = Random(n, g, -1, 1),
                           v_gate = Random(n, g, -3, 3), gate = Random(n, g, -1, 1);
  const RandomParams p(C, g);
  std::vector<S> pool;
  for (float x : Random(static_cast<size_t>(c.num_slots) * slot_stride, g, -0.5f, 0.5f)) {
    pool.push_back(ToState<S>(x));
  }
  std::vector<int32_t> offsets(B + 1);
  for (int b = 0; b <= B; ++b) offsets[b] = b;

  // The three kernels, on their own copies (they update w, a, k, v, v_first in place).
  DeviceBuffer<float> s_r = Upload(r), s_w = Upload(w), s_a = Upload(a), s_k = Upload(k),
                      s_v = Upload(v), s_v_first = Upload(v_first), s_v_gate = Upload(v_gate),
                      s_g = Upload(gate), s_kk = Upload(std::vector<float>(n)),
                      s_y = Upload(std::vector<float>(n));
  DeviceBuffer<S> s_pool = Upload(pool), f_pool = Upload(pool);
  DeviceBuffer<int32_t> d_slots = Upload(c.slots), d_offsets = Upload(offsets);
  ASSERT_FALSE(testing::Test::HasFailure());
  ASSERT_TRUE(LaunchPrepareWkv(stream, B, C, s_w.get(), p.w0.get(), s_a.get(), p.a0.get(),
                               s_k.get(), s_kk.get(), p.k_k.get(), p.k_a.get(), s_v.get(),
                               s_v_first.get(), s_v_gate.get(), p.v0.get(), c.first_layer)
                  .ok());
  ASSERT_TRUE(LaunchWkv7(stream, DeviceState(s_pool.get()), d_slots.get(), B, H, d_offsets.get(), B,
                         WkvForm::kWalk, s_r.get(), s_w.get(), s_k.get(), s_v.get(), s_kk.get(),
                         s_a.get(), C, s_y.get(), C, slot_stride, head_stride)
                  .ok());
  ASSERT_TRUE(LaunchGroupNormGate(stream, B, C, s_y.get(), p.gn_w.get(), p.gn_b.get(), s_r.get(),
                                  s_k.get(), p.r_k.get(), s_v.get(), s_g.get())
                  .ok());

  // The fused kernel on the original rows.
  DeviceBuffer<float> f_r = Upload(r), f_w = Upload(w), f_a = Upload(a), f_k = Upload(k),
                      f_v = Upload(v), f_v_first = Upload(v_first), f_v_gate = Upload(v_gate),
                      f_g = Upload(gate), f_y = Upload(std::vector<float>(n, -7.0f));
  ASSERT_FALSE(testing::Test::HasFailure());
  const TimeMixRows rows{f_r.get(), f_w.get(),       f_a.get(),      f_k.get(),
                         f_v.get(), f_v_first.get(), f_v_gate.get(), f_g.get()};
  const TimeMixParams params = p.View();
  const absl::Status fused =
      LaunchWkv7Decode(stream, DeviceState(f_pool.get()), d_slots.get(), B, H, slot_stride,
                       head_stride, rows, params, c.first_layer, f_y.get());
  ASSERT_TRUE(fused.ok()) << fused;
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  // y: the separate kernels' rows; a padding sequence's row is zeros (the separate kernels
  // leave their GroupNorm of zeros there, which no one reads).
  std::vector<float> want = Download(s_y, n);
  for (int b = 0; b < B; ++b) {
    if (c.slots[b] < 0) std::fill_n(want.begin() + static_cast<int64_t>(b) * C, C, 0.0f);
  }
  ExpectNear(Download(f_y, n), want, kTol, "y");
  std::vector<float> pool_want, pool_got;
  for (S x : Download(s_pool, pool.size())) pool_want.push_back(StateValue(x));
  for (S x : Download(f_pool, pool.size())) pool_got.push_back(StateValue(x));
  // The untouched slots too. An f16 state is rounded once at the end: an f32 difference of one
  // unit (contraction) that straddles a rounding boundary is one f16 unit, 2^-10 of the value.
  ExpectNear(pool_got, pool_want, std::is_same_v<S, float> ? kTol : 1e-3f, "state pool");
  // v_first: the first layer writes v there (the cases with padding are later layers).
  ExpectNear(Download(f_v_first, n), Download(s_v_first, n), 0.0f, "v_first");
  for (const auto& [buf, host, what] :
       {std::tuple{&f_r, &r, "r"}, std::tuple{&f_w, &w, "w"}, std::tuple{&f_a, &a, "a"},
        std::tuple{&f_k, &k, "k"}, std::tuple{&f_v, &v, "v"}, std::tuple{&f_g, &gate, "g"}}) {
    ExpectNear(Download(*buf, n), *host, 0.0f, std::string(what) + " (read only)");
  }
}

TEST_P(Wkv7DecodeTest, MatchesTheSeparateKernels) {
  const auto& [c, type] = GetParam();
  if (type == StateType::kF32) {
    CompareWithTheSeparateKernels<float>(c, stream_.get());
  } else {
    CompareWithTheSeparateKernels<uint16_t>(c, stream_.get());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Wkv7DecodeTest,
    testing::Combine(
        testing::Values(DecodeCase{"OneSequenceFirstLayer", {0}, 1, 1, true},
                        DecodeCase{"PaddingAndThreeHeadsLaterLayer", {2, -1, 0}, 3, 3, false},
                        DecodeCase{"ThirtyTwoHeadsFirstLayer", {1, 3, 0}, 32, 4, true},
                        DecodeCase{"ThirtyTwoHeadsLaterLayer", {3, 0, 2, 1}, 32, 4, false}),
        testing::Values(StateType::kF32, StateType::kF16)),
    [](const testing::TestParamInfo<std::tuple<DecodeCase, StateType>>& info) {
      return std::get<0>(info.param).name +
             (std::get<1>(info.param) == StateType::kF16 ? "_F16State" : "_F32State");
    });

TEST(Wkv7DecodeLaunchTest, RejectsAnIncompleteLoraUp) {
  alignas(16) float f = 0;
  alignas(16) uint16_t weights[8] = {};
  int32_t i = 0;
  const TimeMixRows rows{&f, nullptr, nullptr, &f, &f, &f, nullptr, nullptr};
  const TimeMixParams params{&f, &f, &f, &f, &f, &f, &f, &f};
  const LoraUpMatrix m{weights, &f, 8};
  const LoraUp up{HalfType::kBF16, m, m, m, m};
  auto launch = [&](const LoraUp& u, bool first) {
    return LaunchWkv7Decode(nullptr, &f, &i, 1, 1, kHead * kHead, kHead * kHead, rows, params,
                            first, &f, &u);
  };
  // Without `up` the rows it replaces are needed.
  EXPECT_EQ(
      LaunchWkv7Decode(nullptr, &f, &i, 1, 1, kHead * kHead, kHead * kHead, rows, params, true, &f)
          .code(),
      absl::StatusCode::kInvalidArgument);
  LoraUp bad = up;
  bad.g.dim = 12;  // not a multiple of 8
  EXPECT_EQ(launch(bad, true).code(), absl::StatusCode::kInvalidArgument);
  bad = up;
  bad.a.hidden = nullptr;
  EXPECT_EQ(launch(bad, true).code(), absl::StatusCode::kInvalidArgument);
  bad = up;
  bad.w.weights = weights + 1;  // not 16-byte aligned
  EXPECT_EQ(launch(bad, true).code(), absl::StatusCode::kInvalidArgument);
  bad = up;
  bad.g.dim = kMaxLoraUpHidden;  // the hidden rows would not fit the kernel's shared memory
  EXPECT_EQ(launch(bad, true).code(), absl::StatusCode::kInvalidArgument);
  bad = up;
  bad.v.weights = nullptr;  // a later layer needs the value residual's up-projection
  EXPECT_EQ(launch(bad, false).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status message = launch(bad, false);
  EXPECT_NE(message.message().find("LoraUp.v"), std::string::npos) << message;
}

TEST(Wkv7DecodeLaunchTest, LoraUpDimsTheModelChecksAtLoad) {
  int hidden = 0;
  // 1.5B's decay, ICLR, gate and value dims; the first layer has no value LoRA.
  ASSERT_TRUE(CheckLoraUpDims({96, 96, 256, 64}, false, &hidden).ok());
  EXPECT_EQ(hidden, 512);
  ASSERT_TRUE(CheckLoraUpDims({96, 96, 256, 0}, true, &hidden).ok());
  EXPECT_EQ(hidden, 448);
  const absl::Status odd = CheckLoraUpDims({96, 96, 252, 64}, false, &hidden);
  EXPECT_EQ(odd.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd.message().find("LoraUp.g.dim=252"), std::string::npos) << odd;
  EXPECT_FALSE(CheckLoraUpDims({96, 96, 256, 0}, false, &hidden).ok());
  const absl::Status big = CheckLoraUpDims({kMaxLoraUpHidden - 16, 8, 8, 8}, false, &hidden);
  EXPECT_NE(big.message().find("sum to 4104"), std::string::npos) << big;
  EXPECT_TRUE(CheckLoraUpDims({kMaxLoraUpHidden - 16, 8, 8, 8}, true, &hidden).ok());
}

struct UpCase {
  std::string name;
  std::vector<int32_t> slots;  // a sequence's slot; -1: padding
  int H;
  int num_slots;
  bool first_layer;
  HalfType type;
  std::array<int, 4> dims;  // w, a, g, v
  StateType state;
};

void PrintTo(const UpCase& c, std::ostream* os) { *os << c.name; }

class Wkv7DecodeLoraUpTest : public OnDevice<testing::TestWithParam<UpCase>> {};

template <typename S>
void CompareWithTheUpProducts(const UpCase& c, cudaStream_t stream) {
  const int B = static_cast<int>(c.slots.size()), H = c.H, C = H * kHead;
  const int64_t head_stride = kHead * kHead, slot_stride = H * head_stride + 64;
  const size_t n = static_cast<size_t>(B) * C;
  std::mt19937 g(404);
  const std::vector<float> r = Random(n, g, -1, 1), k = Random(n, g, -1, 1),
                           v = Random(n, g, -1, 1), v_first = Random(n, g, -1, 1);
  const RandomParams p(C, g);
  // The four up-projections: 16-bit weights [C][dim], hidden rows [B][dim] as the down
  // products leave them (tanh'd, sigmoid'd or plain: values in [-1, 1]).
  std::array<DeviceBuffer<uint16_t>, 4> weights;
  std::array<DeviceBuffer<float>, 4> hidden;
  for (int q = 0; q < 4; ++q) {
    const int d = c.dims[q];
    const float scale = 3.0f / std::sqrt(static_cast<float>(d));
    std::vector<uint16_t> bits;
    for (float x : Random(static_cast<size_t>(C) * d, g, -scale, scale)) {
      bits.push_back(c.type == HalfType::kBF16 ? F32ToBF16(x) : F32ToF16(x));
    }
    weights[q] = Upload(bits);
    hidden[q] = Upload(Random(static_cast<size_t>(B) * d, g, -1, 1));
  }
  std::vector<S> pool;
  for (float x : Random(static_cast<size_t>(c.num_slots) * slot_stride, g, -0.5f, 0.5f)) {
    pool.push_back(ToState<S>(x));
  }
  DeviceBuffer<int32_t> d_slots = Upload(c.slots);
  const TimeMixParams params = p.View();
  ASSERT_FALSE(testing::Test::HasFailure());

  // The up-projections as their own launch (kStore: the rows the fused kernel reads without
  // LoraUp), then the kernel on those rows.
  DeviceBuffer<float> s_r = Upload(r), s_k = Upload(k), s_v = Upload(v),
                      s_v_first = Upload(v_first), s_y = Upload(std::vector<float>(n, -7.0f));
  std::array<DeviceBuffer<float>, 4> up_rows;
  std::vector<GemvJob> jobs;
  for (int q = 0; q < (c.first_layer ? 3 : 4); ++q) {
    up_rows[q] = Upload(std::vector<float>(n, NAN));
    jobs.push_back(GemvJob{weights[q].get(), C, c.dims[q], hidden[q].get(), up_rows[q].get()});
  }
  if (c.first_layer) up_rows[3] = Upload(std::vector<float>(n, NAN));  // not read
  DeviceBuffer<S> s_pool = Upload(pool), f_pool = Upload(pool);
  ASSERT_FALSE(testing::Test::HasFailure());
  ASSERT_TRUE(LaunchGemvHalfGroup(stream, c.type, jobs, B).ok());
  const TimeMixRows s_rows{s_r.get(), up_rows[0].get(), up_rows[1].get(), s_k.get(),
                           s_v.get(), s_v_first.get(),  up_rows[3].get(), up_rows[2].get()};
  const absl::Status separate =
      LaunchWkv7Decode(stream, DeviceState(s_pool.get()), d_slots.get(), B, H, slot_stride,
                       head_stride, s_rows, params, c.first_layer, s_y.get());
  ASSERT_TRUE(separate.ok()) << separate;

  // The fused up-projections: the rows they replace are not given.
  DeviceBuffer<float> f_r = Upload(r), f_k = Upload(k), f_v = Upload(v),
                      f_v_first = Upload(v_first), f_y = Upload(std::vector<float>(n, -7.0f));
  ASSERT_FALSE(testing::Test::HasFailure());
  const TimeMixRows f_rows{f_r.get(), nullptr,         nullptr, f_k.get(),
                           f_v.get(), f_v_first.get(), nullptr, nullptr};
  auto matrix = [&](int q) { return LoraUpMatrix{weights[q].get(), hidden[q].get(), c.dims[q]}; };
  const LoraUp up{c.type, matrix(0), matrix(1), matrix(2),
                  c.first_layer ? LoraUpMatrix{} : matrix(3)};
  const absl::Status fused =
      LaunchWkv7Decode(stream, DeviceState(f_pool.get()), d_slots.get(), B, H, slot_stride,
                       head_stride, f_rows, params, c.first_layer, f_y.get(), &up);
  ASSERT_TRUE(fused.ok()) << fused;
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  // The up-projections' sums in another order (a 16-byte chunk's eight positions, against the
  // product kernel's lanes): float rounding apart, the same.
  constexpr float kUpTol = 2e-5f;
  ExpectNear(Download(f_y, n), Download(s_y, n), kUpTol, "y");
  std::vector<float> pool_want, pool_got;
  for (S x : Download(s_pool, pool.size())) pool_want.push_back(StateValue(x));
  for (S x : Download(f_pool, pool.size())) pool_got.push_back(StateValue(x));
  ExpectNear(pool_got, pool_want, std::is_same_v<S, float> ? kUpTol : 1e-3f, "state pool");
  ExpectNear(Download(f_v_first, n), Download(s_v_first, n), 0.0f, "v_first");
}

TEST_P(Wkv7DecodeLoraUpTest, MatchesTheUpProductsLaunchedFirst) {
  const UpCase& c = GetParam();
  if (c.state == StateType::kF32) {
    CompareWithTheUpProducts<float>(c, stream_.get());
  } else {
    CompareWithTheUpProducts<uint16_t>(c, stream_.get());
  }
}

// The 1.5B shape's dims (64, 64, 128 for the gate, 32 for the value residual), the smallest and
// mixed ones; bf16 and fp16 weights; first and later layers, with padding.
INSTANTIATE_TEST_SUITE_P(Cases, Wkv7DecodeLoraUpTest,
                         testing::Values(UpCase{"Bf16FirstLayerOneSequence",
                                                {0},
                                                1,
                                                1,
                                                true,
                                                HalfType::kBF16,
                                                {64, 64, 128, 32},
                                                StateType::kF32},
                                         UpCase{"Bf16LaterLayerThirtyTwoHeads",
                                                {3, 0, 2, 1},
                                                32,
                                                4,
                                                false,
                                                HalfType::kBF16,
                                                {64, 64, 128, 32},
                                                StateType::kF32},
                                         UpCase{"F16LaterLayerPaddingF16State",
                                                {2, -1, 0},
                                                3,
                                                3,
                                                false,
                                                HalfType::kF16,
                                                {8, 16, 40, 24},
                                                StateType::kF16},
                                         UpCase{"F16FirstLayerSmallDims",
                                                {1, 0},
                                                2,
                                                2,
                                                true,
                                                HalfType::kF16,
                                                {8, 8, 8, 8},
                                                StateType::kF32}),
                         [](const testing::TestParamInfo<UpCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace modrwkv::cuda

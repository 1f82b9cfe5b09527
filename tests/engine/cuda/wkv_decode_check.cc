// engine/cuda/wkv_decode.cu, the fused time-mixing core of a decode step, against the three
// kernels it fuses launched one after another (LaunchPrepareWkv, LaunchWkv7 walking one token,
// LaunchGroupNormGate), each of which is tested against its CPU twin (ops_cuda_check.cc,
// wkv_cuda_check.cc). Built into `cuda_wkv_test`; the GPU cases skip without a device.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

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
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_decode.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::DeviceState;
using testing_util::Download;
using testing_util::ExpectNear;
using testing_util::OnDevice;
using testing_util::Random;
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

enum class StateType { kF32, kF16 };

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
  const std::vector<float> w0 = Random(C, g, -2, 2), a0 = Random(C, g, -1, 1),
                           k_k = Random(C, g, -1, 1), k_a = Random(C, g, 0, 1),
                           v0 = Random(C, g, -1, 1), r_k = Random(C, g, -1, 1),
                           gn_w = Random(C, g, -1.5f, 1.5f), gn_b = Random(C, g, -1, 1);
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
  DeviceBuffer<float> d_w0 = Upload(w0), d_a0 = Upload(a0), d_k_k = Upload(k_k),
                      d_k_a = Upload(k_a), d_v0 = Upload(v0), d_r_k = Upload(r_k),
                      d_gn_w = Upload(gn_w), d_gn_b = Upload(gn_b);
  DeviceBuffer<S> s_pool = Upload(pool), f_pool = Upload(pool);
  DeviceBuffer<int32_t> d_slots = Upload(c.slots), d_offsets = Upload(offsets);
  ASSERT_FALSE(testing::Test::HasFailure());
  ASSERT_TRUE(LaunchPrepareWkv(stream, B, C, s_w.get(), d_w0.get(), s_a.get(), d_a0.get(),
                               s_k.get(), s_kk.get(), d_k_k.get(), d_k_a.get(), s_v.get(),
                               s_v_first.get(), s_v_gate.get(), d_v0.get(), c.first_layer)
                  .ok());
  ASSERT_TRUE(LaunchWkv7(stream, DeviceState(s_pool.get()), d_slots.get(), B, H, d_offsets.get(), B,
                         WkvForm::kWalk, s_r.get(), s_w.get(), s_k.get(), s_v.get(), s_kk.get(),
                         s_a.get(), C, s_y.get(), C, slot_stride, head_stride)
                  .ok());
  ASSERT_TRUE(LaunchGroupNormGate(stream, B, C, s_y.get(), d_gn_w.get(), d_gn_b.get(), s_r.get(),
                                  s_k.get(), d_r_k.get(), s_v.get(), s_g.get())
                  .ok());

  // The fused kernel on the original rows.
  DeviceBuffer<float> f_r = Upload(r), f_w = Upload(w), f_a = Upload(a), f_k = Upload(k),
                      f_v = Upload(v), f_v_first = Upload(v_first), f_v_gate = Upload(v_gate),
                      f_g = Upload(gate), f_y = Upload(std::vector<float>(n, -7.0f));
  ASSERT_FALSE(testing::Test::HasFailure());
  const TimeMixRows rows{f_r.get(), f_w.get(),       f_a.get(),      f_k.get(),
                         f_v.get(), f_v_first.get(), f_v_gate.get(), f_g.get()};
  const TimeMixParams params{d_w0.get(), d_a0.get(),  d_k_k.get(),  d_k_a.get(),
                             d_v0.get(), d_r_k.get(), d_gn_w.get(), d_gn_b.get()};
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

}  // namespace
}  // namespace modrwkv::cuda

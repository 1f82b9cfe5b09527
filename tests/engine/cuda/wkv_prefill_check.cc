// A prefill step's fused time-mixing core against the three kernels it fuses launched one after
// another (LaunchPrepareWkv, LaunchWkv7, LaunchGroupNormGate), each of which is tested against
// its CPU twin (ops_cuda_check.cc, wkv_cuda_check.cc): walking, the one kernel of
// engine/cuda/wkv_prefill.cu (LaunchWkv7Prefill); chunked, the chunked recurrence on raw rows
// (LaunchWkv7ChunkedPrefill) and GroupNorm + gate. Built into `cuda_wkv_test`; the GPU cases skip
// without a device.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/base/tensor.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_prefill.cuh"
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

TEST(Wkv7PrefillLaunchTest, RejectsBadShapesAndMissingInputs) {
  alignas(16) float f = 0;
  int32_t i = 0;
  const TimeMixRows rows{&f, &f, &f, &f, &f, &f, &f, &f};
  const TimeMixParams params{&f, &f, &f, &f, &f, &f, &f, &f};
  const int64_t hs = kHead * kHead;
  auto launch = [&](int B, int H, int64_t head_stride, const int32_t* offsets, const TimeMixRows& r,
                    bool first) {
    return LaunchWkv7Prefill(nullptr, &f, &i, B, H, offsets, H * head_stride, head_stride, r,
                             params, first, &f);
  };
  EXPECT_EQ(launch(1, 0, hs, &i, rows, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(-1, 1, hs, &i, rows, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(launch(1, 1, 100, &i, rows, true).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status no_offsets = launch(1, 1, hs, nullptr, rows, true);
  EXPECT_EQ(no_offsets.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_offsets.message().find("LaunchWkv7Prefill"), std::string::npos) << no_offsets;
  TimeMixRows no_gate = rows;
  no_gate.v_gate = nullptr;
  EXPECT_EQ(launch(1, 1, hs, &i, no_gate, false).code(),
            absl::StatusCode::kInvalidArgument);  // a later layer needs v_gate
  TimeMixRows no_decay = rows;
  no_decay.w = nullptr;  // unlike the decode kernel, this one has no up-projections of its own
  EXPECT_EQ(launch(1, 1, hs, &i, no_decay, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(launch(0, 2, hs, &i, rows, true).ok());  // empty batch: nothing to do
}

TEST(Wkv7ChunkedPrefillLaunchTest, RejectsBadShapesAndMissingOutputs) {
  alignas(16) float f = 0;
  int32_t i = 0;
  const TimeMixRows rows{&f, &f, &f, &f, &f, &f, &f, &f};
  const TimeMixParams params{&f, &f, &f, &f, &f, &f, &f, &f};
  const int64_t hs = kHead * kHead;
  auto launch = [&](int B, int H, const TimeMixRows& r, float* k_out, float* v_out, bool first) {
    return LaunchWkv7ChunkedPrefill(nullptr, &f, &i, B, H, &i, H * hs, hs, r, params, first, &f,
                                    k_out, v_out);
  };
  EXPECT_EQ(launch(1, 0, rows, &f, &f, true).code(), absl::StatusCode::kInvalidArgument);
  for (const auto& [k_out, v_out] : {std::pair<float*, float*>{nullptr, &f}, {&f, nullptr}}) {
    const absl::Status st = launch(1, 1, rows, k_out, v_out, true);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("LaunchWkv7ChunkedPrefill"), std::string::npos) << st;
  }
  TimeMixRows no_gate = rows;
  no_gate.v_gate = nullptr;
  EXPECT_EQ(launch(1, 1, no_gate, &f, &f, false).code(),
            absl::StatusCode::kInvalidArgument);       // a later layer needs v_gate
  EXPECT_TRUE(launch(0, 2, rows, &f, &f, true).ok());  // empty batch: nothing to do
}

struct PrefillCase {
  std::string name;
  std::vector<int> lengths;    // each sequence's tokens
  std::vector<int32_t> slots;  // a sequence's slot; -1: padding
  int H;
  int num_slots;
  bool first_layer;
};

void PrintTo(const PrefillCase& c, std::ostream* os) { *os << c.name; }

// y as f32 rows or rounded to bf16 for a tensor-core product.
enum class YType { kF32, kBF16 };

using PrefillParam = std::tuple<PrefillCase, StateType, YType, WkvForm>;
class Wkv7PrefillTest : public OnDevice<testing::TestWithParam<PrefillParam>> {};

// A launch's y rows, f32 or widened from bf16.
struct YRows {
  YRows(size_t n, YType type)
      : f32(Upload(std::vector<float>(n, -7.0f))),
        bf16(Upload(std::vector<uint16_t>(n, F32ToBF16(-7.0f)))),
        type(type),
        n(n) {}
  ActivationsOut Out() {
    return type == YType::kF32 ? ActivationsOut(f32.get())
                               : ActivationsOut::Half(HalfType::kBF16, bf16.get());
  }
  std::vector<float> Values() const {
    if (type == YType::kF32) return Download(f32, n);
    std::vector<float> v;
    for (uint16_t x : Download(bf16, n)) v.push_back(BF16ToF32(x));
    return v;
  }
  DeviceBuffer<float> f32;
  DeviceBuffer<uint16_t> bf16;
  YType type;
  size_t n;
};

template <typename S>
void CompareWithTheSeparateKernels(const PrefillCase& c, YType y_type, WkvForm form,
                                   cudaStream_t stream) {
  const int B = static_cast<int>(c.slots.size()), H = c.H, C = H * kHead;
  ASSERT_EQ(c.lengths.size(), c.slots.size());
  std::vector<int32_t> offsets(B + 1, 0);
  std::partial_sum(c.lengths.begin(), c.lengths.end(), offsets.begin() + 1);
  const int R = offsets[B];
  const int64_t head_stride = kHead * kHead, slot_stride = H * head_stride + 64;
  const size_t n = static_cast<size_t>(R) * C;
  std::mt19937 g(2027);
  const std::vector<float> r = Random(n, g, -1, 1), w = Random(n, g, -3, 3),
                           a = Random(n, g, -3, 3), k = Random(n, g, -1, 1),
                           v = Random(n, g, -1, 1), v_first = Random(n, g, -1, 1),
                           v_gate = Random(n, g, -3, 3), gate = Random(n, g, -1, 1);
  const RandomParams p(C, g);
  std::vector<S> pool;
  for (float x : Random(static_cast<size_t>(c.num_slots) * slot_stride, g, -0.5f, 0.5f)) {
    pool.push_back(ToState<S>(x));
  }

  // The three kernels, on their own copies (they update w, a, k, v, v_first in place).
  DeviceBuffer<float> s_r = Upload(r), s_w = Upload(w), s_a = Upload(a), s_k = Upload(k),
                      s_v = Upload(v), s_v_first = Upload(v_first), s_v_gate = Upload(v_gate),
                      s_g = Upload(gate), s_kk = Upload(std::vector<float>(n)),
                      s_y = Upload(std::vector<float>(n));
  YRows s_out(n, y_type), f_out(n, y_type);
  DeviceBuffer<S> s_pool = Upload(pool), f_pool = Upload(pool);
  DeviceBuffer<int32_t> d_slots = Upload(c.slots), d_offsets = Upload(offsets);
  ASSERT_FALSE(testing::Test::HasFailure());
  ASSERT_TRUE(LaunchPrepareWkv(stream, R, C, s_w.get(), p.w0.get(), s_a.get(), p.a0.get(),
                               s_k.get(), s_kk.get(), p.k_k.get(), p.k_a.get(), s_v.get(),
                               s_v_first.get(), s_v_gate.get(), p.v0.get(), c.first_layer)
                  .ok());
  ASSERT_TRUE(LaunchWkv7(stream, DeviceState(s_pool.get()), d_slots.get(), B, H, d_offsets.get(), R,
                         form, s_r.get(), s_w.get(), s_k.get(), s_v.get(), s_kk.get(), s_a.get(), C,
                         s_y.get(), C, slot_stride, head_stride)
                  .ok());
  ASSERT_TRUE(LaunchGroupNormGate(stream, R, C, static_cast<const float*>(s_y.get()), p.gn_w.get(),
                                  p.gn_b.get(), s_r.get(), s_k.get(), p.r_k.get(), s_v.get(),
                                  s_g.get(), s_out.Out())
                  .ok());

  // The fused core on the original rows (chunked: v' in place on v, k' into k_out).
  DeviceBuffer<float> f_r = Upload(r), f_w = Upload(w), f_a = Upload(a), f_k = Upload(k),
                      f_v = Upload(v), f_v_first = Upload(v_first), f_v_gate = Upload(v_gate),
                      f_g = Upload(gate), f_y = Upload(std::vector<float>(n, -7.0f)),
                      f_k_out = Upload(std::vector<float>(n, -7.0f));
  ASSERT_FALSE(testing::Test::HasFailure());
  const TimeMixRows rows{f_r.get(), f_w.get(),       f_a.get(),      f_k.get(),
                         f_v.get(), f_v_first.get(), f_v_gate.get(), f_g.get()};
  const bool chunked = form == WkvForm::kChunked;
  absl::Status fused;
  if (chunked) {
    fused = LaunchWkv7ChunkedPrefill(stream, DeviceState(f_pool.get()), d_slots.get(), B, H,
                                     d_offsets.get(), slot_stride, head_stride, rows, p.View(),
                                     c.first_layer, f_y.get(), f_k_out.get(), f_v.get());
    fused.Update(LaunchGroupNormGate(stream, R, C, static_cast<const float*>(f_y.get()),
                                     p.gn_w.get(), p.gn_b.get(), f_r.get(), f_k_out.get(),
                                     p.r_k.get(), f_v.get(), f_g.get(), f_out.Out()));
  } else {
    fused =
        LaunchWkv7Prefill(stream, DeviceState(f_pool.get()), d_slots.get(), B, H, d_offsets.get(),
                          slot_stride, head_stride, rows, p.View(), c.first_layer, f_out.Out());
  }
  ASSERT_TRUE(fused.ok()) << fused;
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  // y: the separate kernels' rows; a padding sequence's rows are zeros (the separate kernels
  // leave their GroupNorm of zeros there, which no one reads). Rounded to bf16, an f32
  // difference of one unit that straddles a rounding boundary is one bf16 unit (2^-8).
  std::vector<float> want = s_out.Values();
  for (int b = 0; b < B; ++b) {
    if (c.slots[b] < 0) {
      std::fill(want.begin() + static_cast<int64_t>(offsets[b]) * C,
                want.begin() + static_cast<int64_t>(offsets[b + 1]) * C, 0.0f);
    }
  }
  // Padding rows as `want_rows` has them (rows a padding sequence's blocks leave as they were).
  auto real_rows = [&](std::vector<float> got, const std::vector<float>& want_rows) {
    for (int b = 0; b < B; ++b) {
      if (c.slots[b] >= 0) continue;
      for (int64_t e = static_cast<int64_t>(offsets[b]) * C; e < offsets[b + 1] * C; ++e) {
        got[e] = want_rows[e];
      }
    }
    return got;
  };
  // Chunked, GroupNorm runs over the padding rows too (on the recurrence's zeros and rows it did
  // not prepare there, which no one reads): those rows are not compared.
  ExpectNear(chunked ? real_rows(f_out.Values(), want) : f_out.Values(), want,
             y_type == YType::kF32 ? kTol : 8e-3f, "y");
  if (chunked) {  // the prepared key and value: the three kernels' k and v
    const std::vector<float> k_want = Download(s_k, n), v_want = Download(s_v, n);
    ExpectNear(real_rows(Download(f_k_out, n), k_want), k_want, kTol, "k'");
    ExpectNear(real_rows(Download(f_v, n), v_want), v_want, kTol, "v'");
  }
  std::vector<float> pool_want, pool_got;
  for (S x : Download(s_pool, pool.size())) pool_want.push_back(StateValue(x));
  for (S x : Download(f_pool, pool.size())) pool_got.push_back(StateValue(x));
  // The untouched slots too; an f16 state is rounded once at the end (as in wkv_decode_check).
  ExpectNear(pool_got, pool_want, std::is_same_v<S, float> ? kTol : 1e-3f, "state pool");
  // v_first: the first layer writes v there (its padding rows as well, which no one reads).
  if (c.first_layer) {
    const std::vector<float> want_first = Download(s_v_first, n);
    ExpectNear(real_rows(Download(f_v_first, n), want_first), want_first, 0.0f, "v_first");
  }
  for (const auto& [buf, host, what] :
       {std::tuple{&f_r, &r, "r"}, std::tuple{&f_w, &w, "w"}, std::tuple{&f_a, &a, "a"},
        std::tuple{&f_k, &k, "k"}, std::tuple{&f_v, &v, "v"}, std::tuple{&f_g, &gate, "g"},
        std::tuple{&f_v_gate, &v_gate, "v_gate"}}) {
    if (chunked && buf == &f_v) continue;  // v' (above)
    ExpectNear(Download(*buf, n), *host, 0.0f, std::string(what) + " (read only)");
  }
  if (!c.first_layer) ExpectNear(Download(f_v_first, n), v_first, 0.0f, "v_first (read only)");
}

TEST_P(Wkv7PrefillTest, MatchesTheSeparateKernels) {
  const auto& [c, state, y_type, form] = GetParam();
  if (state == StateType::kF32) {
    CompareWithTheSeparateKernels<float>(c, y_type, form, stream_.get());
  } else {
    CompareWithTheSeparateKernels<uint16_t>(c, y_type, form, stream_.get());
  }
}

// Lengths around the walking kernel's chunk of 8 tokens (1, 7, 8, 9, 17: a partial chunk, a full
// one, one past) and the chunked form's 16, an empty sequence, padding, first and later layers,
// one to thirty-two heads; on a device of 132 SMs the chunked blocks own 16 state rows, but 32
// with 3 x 32 heads and 64 with 5 x 32 (wkv.cu, Wkv7Chunked).
INSTANTIATE_TEST_SUITE_P(
    Cases, Wkv7PrefillTest,
    testing::Combine(
        testing::Values(
            PrefillCase{"OneSequenceFirstLayer", {20}, {0}, 1, 1, true},
            PrefillCase{"MixedLengthsLaterLayer", {1, 8, 0, 9, 17}, {3, 0, 4, 1, 2}, 3, 5, false},
            PrefillCase{"PaddingFirstLayer", {5, 3, 10}, {1, -1, 0}, 2, 2, true},
            PrefillCase{"PaddingLaterLayer", {7, 4, 12}, {-1, 0, 1}, 2, 2, false},
            PrefillCase{"ThirtyTwoHeadsLaterLayer", {16, 5}, {1, 0}, 32, 3, false},
            PrefillCase{"ThreeTimesThirtyTwoHeadsFirstLayer", {1, 17, 2}, {2, 0, 1}, 32, 3, true},
            PrefillCase{"FiveTimesThirtyTwoHeadsLaterLayer",
                        {1, 5, 0, 1, 18},
                        {0, 1, 2, 3, 4},
                        32,
                        5,
                        false}),
        testing::Values(StateType::kF32, StateType::kF16),
        testing::Values(YType::kF32, YType::kBF16),
        testing::Values(WkvForm::kWalk, WkvForm::kChunked)),
    [](const testing::TestParamInfo<PrefillParam>& info) {
      return std::get<0>(info.param).name +
             (std::get<1>(info.param) == StateType::kF16 ? "_F16State" : "_F32State") +
             (std::get<2>(info.param) == YType::kBF16 ? "_Bf16Y" : "_F32Y") +
             (std::get<3>(info.param) == WkvForm::kChunked ? "_Chunked" : "_Walk");
    });

}  // namespace
}  // namespace modrwkv::cuda

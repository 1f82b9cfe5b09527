// The ops that write a tensor-core product's input rounded to 16 bits (ActivationsOut::Half,
// to_half.cuh) against their own f32 rows rounded on the host: token shift, NormShift,
// activations, GroupNorm + gate and the fused decode kernel, for bf16 and fp16. Within one unit
// in the last place of the 16-bit value (the two instances of a kernel may contract a multiply-add
// differently); a wrong index, type or rounding would be far off. Built into `cuda_wkv_test`; the
// GPU cases skip without a device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/base/tensor.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/rwkv7_math.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/to_half.cuh"
#include "engine/cuda/wkv_decode.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::Download;
using testing_util::OnDevice;
using testing_util::Random;
using testing_util::Upload;

constexpr int kHead = 64;

void ExpectRoundedLike(const std::vector<uint16_t>& got, const std::vector<float>& f32,
                       HalfType type, const std::string& what) {
  ASSERT_EQ(got.size(), f32.size()) << what;
  // Sign and magnitude onto one line of integers, where neighbours are one ulp apart (+-0 meet).
  auto line = [](uint16_t v) {
    return (v & 0x8000) != 0 ? -static_cast<int>(v & 0x7fff) : static_cast<int>(v & 0x7fff);
  };
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const uint16_t want = type == HalfType::kBF16 ? F32ToBF16(f32[i]) : F32ToF16(f32[i]);
    if (std::abs(line(got[i]) - line(want)) > 1 && bad++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: 0x" << std::hex << got[i] << ", rounded f32 0x"
                    << want << std::dec << " (" << f32[i] << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " values off";
}

class HalfOutTest : public OnDevice<testing::TestWithParam<HalfType>> {};

TEST_P(HalfOutTest, TokenShiftAndActivationsAndGroupNormGate) {
  const HalfType type = GetParam();
  const int R = 5, C = 3 * kHead, mixes = 6;
  const int64_t stride = 2 * C;
  std::mt19937 g(7);
  const std::vector<float> x = Random(static_cast<size_t>(R) * C, g, -2, 2);
  const std::vector<float> mix = Random(static_cast<size_t>(mixes) * C, g, 0, 1);
  const std::vector<float> pool = Random(2 * stride, g, -1, 1);
  const std::vector<int32_t> prev = {-2, 0, 1, -1, 3};  // slot 1, rows, slot 0, a row
  DeviceBuffer<float> d_x = Upload(x), d_mix = Upload(mix), d_pool = Upload(pool);
  DeviceBuffer<int32_t> d_prev = Upload(prev);
  const size_t n = static_cast<size_t>(mixes) * R * C;
  DeviceBuffer<float> d_f32 = Upload(std::vector<float>(n));
  DeviceBuffer<uint16_t> d_half = Upload(std::vector<uint16_t>(n));
  ASSERT_FALSE(HasFailure());
  cudaStream_t st = stream_.get();
  ASSERT_TRUE(LaunchTokenShift(st, d_x.get(), R, C, d_prev.get(), d_pool.get(), stride, d_mix.get(),
                               mixes, d_f32.get())
                  .ok());
  ASSERT_TRUE(LaunchTokenShift(st, d_x.get(), R, C, d_prev.get(), d_pool.get(), stride, d_mix.get(),
                               mixes, ActivationsOut::Half(type, d_half.get()))
                  .ok());
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  ExpectRoundedLike(Download(d_half, n), Download(d_f32, n), type, "token shift");

  for (const Activation f : {Activation::kTanh, Activation::kSigmoid, Activation::kReluSquare}) {
    const int64_t m = static_cast<int64_t>(R) * C;
    ASSERT_TRUE(LaunchActivation(st, f, d_x.get(), m, d_f32.get()).ok());
    ASSERT_TRUE(
        LaunchActivation(st, f, d_x.get(), m, ActivationsOut::Half(type, d_half.get())).ok());
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    ExpectRoundedLike(Download(d_half, m), Download(d_f32, m), type,
                      "activation " + std::to_string(static_cast<int>(f)));
  }
  // Out of place: the input is left as it was.
  EXPECT_EQ(Download(d_x, x.size()), x);

  const std::vector<float> r = Random(x.size(), g, -1, 1), k = Random(x.size(), g, -1, 1),
                           v = Random(x.size(), g, -1, 1), gate = Random(x.size(), g, -1, 1),
                           gn_w = Random(C, g, -1, 1), gn_b = Random(C, g, -1, 1),
                           r_k = Random(C, g, -1, 1);
  DeviceBuffer<float> d_r = Upload(r), d_k = Upload(k), d_v = Upload(v), d_g = Upload(gate),
                      d_gn_w = Upload(gn_w), d_gn_b = Upload(gn_b), d_r_k = Upload(r_k);
  ASSERT_FALSE(HasFailure());
  const float* y = d_x.get();
  ASSERT_TRUE(LaunchGroupNormGate(st, R, C, y, d_gn_w.get(), d_gn_b.get(), d_r.get(), d_k.get(),
                                  d_r_k.get(), d_v.get(), d_g.get(), d_f32.get())
                  .ok());
  ASSERT_TRUE(LaunchGroupNormGate(st, R, C, y, d_gn_w.get(), d_gn_b.get(), d_r.get(), d_k.get(),
                                  d_r_k.get(), d_v.get(), d_g.get(),
                                  ActivationsOut::Half(type, d_half.get()))
                  .ok());
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  ExpectRoundedLike(Download(d_half, x.size()), Download(d_f32, x.size()), type,
                    "group norm, gate");
}

// The two that also write the state: each run on its own copy of the pool.
TEST_P(HalfOutTest, NormShiftAndTheFusedDecodeKernel) {
  const HalfType type = GetParam();
  const int B = 3, H = 2, C = H * kHead, mixes = 6;
  const int64_t head_stride = kHead * kHead, slot_stride = 2 * C + H * head_stride;
  std::mt19937 g(8);
  const std::vector<float> x = Random(static_cast<size_t>(B) * C, g, -2, 2);
  const std::vector<float> params = Random(static_cast<size_t>(8 + mixes) * C, g, -1, 1);
  const std::vector<float> pool = Random(3 * slot_stride, g, -0.5f, 0.5f);
  const std::vector<int32_t> slots = {2, -1, 0};
  DeviceBuffer<float> d_x = Upload(x), d_p = Upload(params), pool_a = Upload(pool),
                      pool_b = Upload(pool);
  DeviceBuffer<int32_t> d_slots = Upload(slots);
  const size_t n = static_cast<size_t>(mixes) * B * C;
  DeviceBuffer<float> d_f32 = Upload(std::vector<float>(n));
  DeviceBuffer<uint16_t> d_half = Upload(std::vector<uint16_t>(n));
  ASSERT_FALSE(HasFailure());
  cudaStream_t st = stream_.get();
  const float* p = d_p.get();
  auto P = [&](int i) { return p + static_cast<int64_t>(i) * C; };
  ASSERT_TRUE(LaunchNormShift(st, d_x.get(), B, C, P(0), P(1), 1e-5f, d_slots.get(), pool_a.get(),
                              slot_stride, P(8), mixes, d_f32.get())
                  .ok());
  ASSERT_TRUE(LaunchNormShift(st, d_x.get(), B, C, P(0), P(1), 1e-5f, d_slots.get(), pool_b.get(),
                              slot_stride, P(8), mixes, ActivationsOut::Half(type, d_half.get()))
                  .ok());
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  ExpectRoundedLike(Download(d_half, n), Download(d_f32, n), type, "NormShift");
  EXPECT_EQ(Download(pool_a, pool.size()), Download(pool_b, pool.size()));

  const std::vector<float> rows = Random(8 * x.size(), g, -1, 1);
  DeviceBuffer<float> d_rows = Upload(rows);
  ASSERT_FALSE(HasFailure());
  auto row = [&](int i) { return d_rows.get() + static_cast<int64_t>(i) * B * C; };
  const TimeMixRows in{row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)};
  const TimeMixParams tp{P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7)};
  const int64_t wkv = C;  // the heads' states follow the shift in each slot
  ASSERT_TRUE(LaunchWkv7Decode(st, pool_a.get() + wkv, d_slots.get(), B, H, slot_stride,
                               head_stride, in, tp, false, d_f32.get())
                  .ok());
  ASSERT_TRUE(LaunchWkv7Decode(st, pool_b.get() + wkv, d_slots.get(), B, H, slot_stride,
                               head_stride, in, tp, false, ActivationsOut::Half(type, d_half.get()))
                  .ok());
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  ExpectRoundedLike(Download(d_half, x.size()), Download(d_f32, x.size()), type, "decode y");
  EXPECT_EQ(Download(pool_a, pool.size()), Download(pool_b, pool.size()));
}

// A product's output that cuBLAS wrote in 16 bits, activated in place (LaunchActivation on
// 16-bit rows): each value widened, f applied, rounded as the producers round. 8 x 37 + 5
// values: the 16-byte steps and a tail.
TEST_P(HalfOutTest, ActivationsInPlaceOnHalfRows) {
  const HalfType type = GetParam();
  constexpr int64_t n = 8 * 37 + 5;
  std::mt19937 g(31);
  std::vector<uint16_t> x;
  for (float v : Random(n, g, -4, 4))
    x.push_back(type == HalfType::kBF16 ? F32ToBF16(v) : F32ToF16(v));
  auto widen = [&](uint16_t v) { return type == HalfType::kBF16 ? BF16ToF32(v) : F16ToF32(v); };
  cudaStream_t st = stream_.get();
  for (const Activation f : {Activation::kTanh, Activation::kSigmoid, Activation::kReluSquare}) {
    DeviceBuffer<uint16_t> d_x = Upload(x);
    ASSERT_FALSE(HasFailure());
    ASSERT_TRUE(LaunchActivation(st, f, type, d_x.get(), n).ok());
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    std::vector<float> want;
    for (uint16_t v : x) {
      const float w = widen(v);
      want.push_back(f == Activation::kTanh      ? std::tanh(w)
                     : f == Activation::kSigmoid ? math::Sigmoid(w)
                                                 : math::ReluSquare(w));
    }
    ExpectRoundedLike(Download(d_x, n), want, type,
                      "in-place activation " + std::to_string(static_cast<int>(f)));
  }
  DeviceBuffer<uint16_t> d_x = Upload(x);
  EXPECT_EQ(LaunchActivation(st, Activation::kTanh, type, d_x.get() + 1, n - 1).code(),
            absl::StatusCode::kInvalidArgument);  // not 16-byte aligned
}

INSTANTIATE_TEST_SUITE_P(Types, HalfOutTest, testing::Values(HalfType::kBF16, HalfType::kF16),
                         [](const testing::TestParamInfo<HalfType>& info) {
                           return info.param == HalfType::kBF16 ? "BF16" : "F16";
                         });

TEST(ActivationsOutTest, FromF32RowsOrNamedHalf) {
  float f = 0;
  uint16_t h = 0;
  const ActivationsOut a = &f;
  EXPECT_TRUE(a.valid());
  EXPECT_FALSE(a.is_half());
  const ActivationsOut b = ActivationsOut::Half(HalfType::kF16, &h);
  EXPECT_TRUE(b.valid() && b.is_half());
  EXPECT_EQ(b.type, HalfType::kF16);
  EXPECT_FALSE(ActivationsOut(nullptr).valid());
  // A launcher refuses an output nowhere before it launches anything.
  EXPECT_EQ(LaunchActivation(nullptr, Activation::kTanh, &f, 1, ActivationsOut(nullptr)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::cuda

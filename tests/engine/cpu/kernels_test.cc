// SIMD kernels against their scalar twins.
#include "engine/cpu/kernels.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/engine/cpu/kernel_test_util.h"

namespace modrwkv::cpu {
namespace {

using testing_kernels::MatrixOf;
using testing_kernels::MostlyZero;
using testing_kernels::Random;
using testing_kernels::RoundedX;

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

// Packs W[out][in] (f32 values) into the panel layout of kernels.h for weight type wt.
struct Packed {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  std::vector<int8_t> i8;
  const void* data(WType wt) const {
    return wt == WType::kF32    ? static_cast<const void*>(f32.data())
           : wt == WType::kBF16 ? static_cast<const void*>(bf16.data())
                                : static_cast<const void*>(i8.data());
  }
};
Packed Pack(const std::vector<float>& w, int out, int in) {
  const int panels = (out + kPanelCols - 1) / kPanelCols;
  const size_t n = static_cast<size_t>(panels) * kPanelCols * in;
  Packed p{std::vector<float>(n), std::vector<uint16_t>(n), std::vector<int8_t>(n)};
  for (int o = 0; o < out; ++o) {
    const int c = o % kPanelCols;
    for (int i = 0; i < in; ++i) {
      const size_t base = static_cast<size_t>(o / kPanelCols) * kPanelCols * in +
                          static_cast<size_t>(i) * kPanelCols;
      const float v = w[static_cast<size_t>(o) * in + i];
      p.f32[base + c] = v;
      p.bf16[base + 2 * (c % 16) + c / 16] = F32ToBF16(v);
      p.i8[base + c] = static_cast<int8_t>(std::lround(v * 127));
    }
  }
  return p;
}

// Plain dot products in double: the check that the packed layout means what kernels.h says.
double Dot(WType wt, const std::vector<float>& w, const std::vector<float>& x, int o, int b, int in,
           const std::vector<float>& scale) {
  double s = 0;
  for (int i = 0; i < in; ++i) {
    const float wf = w[static_cast<size_t>(o) * in + i];
    const double wv = wt == WType::kF32    ? wf
                      : wt == WType::kBF16 ? BF16ToF32(F32ToBF16(wf))
                                           : std::lround(wf * 127) * static_cast<double>(scale[o]);
    s += wv * x[static_cast<size_t>(b) * in + i];
  }
  return s;
}

TEST(PanelGemmTest, ScalarKernelComputesTheProductOfThePackedLayout) {
  const int in = 50, out = 45;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 1);
  const std::vector<float> x = Random(static_cast<size_t>(3) * in, 2);
  const std::vector<float> scale = Random(out, 13, 0.001f, 0.1f);
  const Packed p = Pack(w, out, in);
  for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
    std::vector<float> y(3 * out, 7.0f);
    std::vector<float> xp(x.size());
    PackRows(x.data(), in, 3, in, xp.data());
    scalar::PanelGemm(wt, p.data(wt), scale.data(), in, out, 0, 2, xp.data(), 3, y.data(), out,
                      /*accumulate=*/true);
    for (int b = 0; b < 3; ++b) {
      for (int o = 0; o < out; ++o) {
        ASSERT_NEAR(y[b * out + o], 7.0 + Dot(wt, w, x, o, b, in, scale), 1e-4)
            << "wt=" << static_cast<int>(wt) << " b=" << b << " o=" << o;
      }
    }
  }
}

// UnpackMatrix gives back W[out][in] from every type and layout MakeMatrix builds, from either
// orientation of the checkpoint tensor.
TEST(UnpackMatrixTest, InvertsMakeMatrix) {
  const int out = 45, in = 20;  // two panels, the second partial
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 5);
  std::vector<float> wt(w.size());  // [in][out]
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) wt[static_cast<size_t>(i) * out + o] = w[o * in + i];
  }
  const TensorView plain{"w", DType::kF32, {out, in}, w.data(), w.size() * 4};
  const TensorView transposed{"w", DType::kF32, {in, out}, wt.data(), wt.size() * 4};
  for (const auto& [view, is_t] : {std::pair{plain, false}, std::pair{transposed, true}}) {
    for (WType type : {WType::kF32, WType::kBF16, WType::kI8}) {
      for (Layout layout : {Layout::kRows, Layout::kPanels, Layout::kInputRows}) {
        if (type == WType::kI8 && layout == Layout::kRows) continue;  // not built
        const Matrix m = MakeMatrix(view, is_t, type, layout);
        const std::vector<float> back = UnpackMatrix(m);
        ASSERT_EQ(back.size(), w.size());
        for (int o = 0; o < out; ++o) {
          for (int i = 0; i < in; ++i) {
            const float v = w[o * in + i];
            const float want = type == WType::kF32    ? v
                               : type == WType::kBF16 ? BF16ToF32(F32ToBF16(v))
                                                      : back[o * in + i];
            ASSERT_EQ(back[o * in + i], want) << static_cast<int>(type) << " o=" << o;
            if (type == WType::kI8) {
              ASSERT_NEAR(back[o * in + i], v, m.scale[o] / 2 + 1e-7);
            }
          }
        }
      }
    }
  }
}

// Every ISA gives the scalar kernel's bits for every row count (tiles of 1..12 rows, balanced
// splits above), panel range, tail width and type; rows outside the panel range are untouched.
TEST_P(KernelIsaTest, PanelGemmIsBitIdenticalToScalarForEveryRowCount) {
  for (int in : {1, 16, 77, 768}) {
    const int out = 37 + 64;  // 4 panels, the last 5 columns wide
    const std::vector<float> w = Random(static_cast<size_t>(out) * in, 1);
    const Packed p = Pack(w, out, in);
    const std::vector<float> scale = Random(out, 13, 0.001f, 0.1f);
    const int max_rows = 40;
    const std::vector<float> x = Random(static_cast<size_t>(max_rows) * in, 2);
    for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
      for (int rows = 1; rows <= max_rows; rows += rows < 14 ? 1 : 7) {
        for (bool acc : {false, true}) {
          for (auto [p0, p1] : {std::pair{0, 4}, std::pair{1, 4}, std::pair{0, 1}}) {
            std::vector<float> y = Random(static_cast<size_t>(rows) * out, 3);
            std::vector<float> ref = y;
            const std::vector<float> before = y;
            std::vector<float> xp(static_cast<size_t>(rows) * in);
            PackRows(x.data(), in, rows, in, xp.data());
            PanelGemm(wt, p.data(wt), scale.data(), in, out, p0, p1, xp.data(), rows, y.data(), out,
                      acc);
            scalar::PanelGemm(wt, p.data(wt), scale.data(), in, out, p0, p1, xp.data(), rows,
                              ref.data(), out, acc);
            for (size_t i = 0; i < y.size(); ++i) {
              ASSERT_EQ(y[i], ref[i])
                  << "in=" << in << " rows=" << rows << " wt=" << static_cast<int>(wt)
                  << " p=" << p0 << ".." << p1 << " i=" << i;
              const int col = static_cast<int>(i % out);
              if (col < p0 * kPanelCols || col >= p1 * kPanelCols) {
                ASSERT_EQ(y[i], before[i]);
              }
            }
          }
        }
      }
    }
  }
}

// int4 (WType::kI4): the quantiser keeps each weight within half a step of its group's scale and
// the group's largest magnitude up to the scale's bf16 rounding, UnpackMatrix reads back what the
// kernels read, and the scalar kernel computes the product of those weights group by group.
TEST(Int4Test, QuantisesByGroupAndTheScalarKernelMultipliesWhatUnpackReads) {
  for (int in : {1, 31, 32, 33, 100}) {
    const int out = 45;  // two panels, the second partial
    std::vector<float> w = Random(static_cast<size_t>(out) * in, 21);
    for (int o = 0; o < out; ++o) {
      // Row 3's first group all zero; row 4's weights a thousand times smaller (scales that
      // differ by group and row).
      for (int i = 0; i < std::min(in, kI4Group); ++i) {
        if (o == 3) w[static_cast<size_t>(o) * in + i] = 0.0f;
      }
      if (o == 4) {
        for (int i = 0; i < in; ++i) w[static_cast<size_t>(o) * in + i] *= 1e-3f;
      }
    }
    const Matrix m = MatrixOf(w, out, in, WType::kI4, Layout::kPanels);
    ASSERT_EQ(m.bytes(), 2 * I4PanelBytes(in));
    const std::vector<float> back = UnpackMatrix(m);
    for (int o = 0; o < out; ++o) {
      for (int g0 = 0; g0 < in; g0 += kI4Group) {
        const int g1 = std::min(in, g0 + kI4Group);
        float amax = 0;
        for (int i = g0; i < g1; ++i) amax = std::max(amax, std::abs(w[o * in + i]));
        const float step = amax / 8;
        float extreme = 0;  // the signed weight of largest magnitude: level -8 is its side
        for (int i = g0; i < g1; ++i) {
          if (std::abs(w[o * in + i]) == amax) extreme = w[o * in + i];
        }
        bool extreme_kept = false;
        for (int i = g0; i < g1; ++i) {
          const float v = w[o * in + i], b = back[o * in + i];
          // Half a step, and the bf16 scale's rounding (2^-9 relative) over up to 8 steps; on
          // the other side of zero from the extreme, the levels end at 7 steps.
          const float clamped = (v < 0) != (extreme < 0) && std::abs(v) > 7 * step
                                    ? std::abs(v) - 7 * step
                                    : step / 2;
          ASSERT_LE(std::abs(b - v), clamped + 8 * step / 256 + 1e-12f)
              << "in=" << in << " o=" << o << " i=" << i;
          if (std::abs(v) == amax) extreme_kept |= std::abs(b - v) <= amax / 256;
        }
        EXPECT_TRUE(extreme_kept || amax == 0) << "in=" << in << " o=" << o << " group " << g0;
        if (amax == 0) {
          for (int i = g0; i < g1; ++i) ASSERT_EQ(back[o * in + i], 0.0f);
        }
      }
    }
    // x rounded to int8 by group: within half a step of x; the scalar kernel: the products of
    // the unpacked weights and the rounded x, in double, within f32 rounding.
    const int rows = 3, groups = (in + kI4Group - 1) / kI4Group;
    std::vector<float> x = Random(static_cast<size_t>(rows) * in, 22);
    x[0] = 1e6f;  // one group dominated by one value: the rest rounds to 0
    std::vector<int8_t> xq(static_cast<size_t>(rows) * groups * kI4Group);
    std::vector<float> xscale(static_cast<size_t>(rows) * groups);
    std::vector<int32_t> xsum(xscale.size());
    QuantizeRowsI4(x.data(), in, rows, in, xq.data(), xscale.data(), xsum.data());
    auto xr = [&](int b, int i) {  // x as the kernel sees it
      const int64_t at = int64_t{b} * groups + i / kI4Group;
      return double(xq[at * kI4Group + i % kI4Group]) * xscale[at];
    };
    for (int b = 0; b < rows; ++b) {
      for (int g = 0; g < groups; ++g) {
        int32_t sum = 0;
        for (int i = 0; i < kI4Group; ++i) {
          const int8_t q = xq[(int64_t{b} * groups + g) * kI4Group + i];
          sum += q;
          if (g * kI4Group + i >= in) {
            ASSERT_EQ(q, 0) << "padding";
          }
        }
        ASSERT_EQ(sum, xsum[b * groups + g]);
      }
      for (int i = 0; i < in; ++i) {
        ASSERT_LE(std::abs(xr(b, i) - x[b * in + i]), xscale[b * groups + i / kI4Group] * 0.5001)
            << "b=" << b << " i=" << i;
      }
    }
    std::vector<float> y(static_cast<size_t>(rows) * out, 7.0f);
    scalar::I4Gemm(m.data(), in, out, 0, 2, xq.data(), xscale.data(), xsum.data(), rows, y.data(),
                   out, /*accumulate=*/true);
    for (int b = 0; b < rows; ++b) {
      for (int o = 0; o < out; ++o) {
        double s = 7.0, mag = 7.0;
        for (int i = 0; i < in; ++i) {
          s += double(back[o * in + i]) * xr(b, i);
          mag += std::abs(double(back[o * in + i]) * xr(b, i));
        }
        ASSERT_NEAR(y[b * out + o], s, 1e-6 * mag) << "in=" << in << " b=" << b << " o=" << o;
      }
    }
  }
}

// Every ISA rounds x for the integer products as the scalar kernel does, bit for bit: partial
// groups, a row stride wider than the row, halfway values (half to even), a group of zeros, of
// -0, of values too small for 127 / max|x| to be finite (all 0), a NaN or an infinity (scale NaN,
// levels 0), a denormal beside normal values.
TEST_P(KernelIsaTest, QuantizeRowsI4GivesTheScalarKernelsBits) {
  for (int in : {1, 15, 16, 17, 31, 32, 33, 100, 800}) {
    const int rows = 7, ldx = in + 3, groups = (in + kI4Group - 1) / kI4Group;
    std::vector<float> x = Random(static_cast<size_t>(rows) * ldx, 41, -4, 4);
    auto group = [&](int b, int g) {
      return x.data() + static_cast<size_t>(b) * ldx + g * kI4Group;
    };
    auto fill = [&](int b, int g, float v) {
      std::fill(group(b, g), group(b, g) + std::min(kI4Group, in - g * kI4Group), v);
    };
    // Row 0: halfway products: max 127, so x * 127 / max = x, and x.5 rounds to even.
    for (int i = 0; i < in; ++i) x[i] = i % 2 ? (i % 254) / 2.0f - 63.0f : 127.0f;
    fill(1, groups - 1, 0.0f);
    fill(2, 0, -0.0f);
    fill(3, groups - 1, 1e-40f);  // denormal: 127 / max|x| overflows
    group(4, 0)[in > 1 ? 1 : 0] = std::numeric_limits<float>::quiet_NaN();
    group(5, groups - 1)[0] = -std::numeric_limits<float>::infinity();
    group(6, 0)[0] = 1e-41f;  // a denormal beside normal values rounds to 0
    const size_t n = static_cast<size_t>(rows) * groups;
    std::vector<int8_t> q(n * kI4Group, 99), q_ref(n * kI4Group, 99);
    std::vector<float> scale(n), scale_ref(n);
    std::vector<int32_t> sum(n), sum_ref(n);
    QuantizeRowsI4(x.data(), ldx, rows, in, q.data(), scale.data(), sum.data());
    scalar::QuantizeRowsI4(x.data(), ldx, rows, in, q_ref.data(), scale_ref.data(), sum_ref.data());
    ASSERT_EQ(q, q_ref) << "in=" << in;
    ASSERT_EQ(sum, sum_ref) << "in=" << in;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(scale[i]), std::bit_cast<uint32_t>(scale_ref[i]))
          << "in=" << in << " group " << i;
    }
    // What the rules say, checked on the scalar kernel's results.
    const int last = groups - 1;
    EXPECT_TRUE(std::isnan(scale_ref[4 * groups])) << "in=" << in;
    EXPECT_TRUE(std::isnan(scale_ref[5 * groups + last])) << "in=" << in;
    EXPECT_EQ(scale_ref[1 * groups + last], 0.0f);
    for (int b : {1, 3, 4, 5}) {
      const int g = b == 4 ? 0 : last;
      const int8_t* levels = q_ref.data() + (static_cast<size_t>(b) * groups + g) * kI4Group;
      EXPECT_EQ(std::count(levels, levels + kI4Group, 0), kI4Group) << "in=" << in << " row " << b;
      EXPECT_EQ(sum_ref[b * groups + g], 0) << "in=" << in << " row " << b;
    }
    if (in >= 4) {
      EXPECT_EQ(q_ref[0], 127);
      EXPECT_EQ(q_ref[1], -62) << "-62.5 rounds to even";
      EXPECT_EQ(q_ref[3], -62) << "-61.5 rounds to even";
    }
  }
}

// A corrupt checkpoint's NaN weight quantises to level 0 (int8 and int4), not to an undefined
// conversion of NaN to an integer (UBSan runs this); the rest of its row or group keeps its levels.
TEST(Int4Test, NaNWeightsQuantiseToZero) {
  const int out = 32, in = 64;
  std::vector<float> w = Random(static_cast<size_t>(out) * in, 9);
  w[5] = std::numeric_limits<float>::quiet_NaN();
  for (WType type : {WType::kI8, WType::kI4}) {
    const std::vector<float> back = UnpackMatrix(MatrixOf(w, out, in, type, Layout::kPanels));
    EXPECT_EQ(back[5], 0.0f) << static_cast<int>(type);
    for (size_t i = 0; i < back.size(); ++i) {
      if (i != 5) {
        ASSERT_NEAR(back[i], w[i], 0.13f) << static_cast<int>(type) << " i=" << i;
      }
    }
  }
  // int4, either layout: an infinite weight too, its group's scale from the finite ones (an
  // infinite scale would make the group's products NaN, and a zero input's skipped term not zero).
  w[70] = -std::numeric_limits<float>::infinity();
  for (Layout layout : {Layout::kPanels, Layout::kInputRows}) {
    const std::vector<float> back = UnpackMatrix(MatrixOf(w, out, in, WType::kI4, layout));
    EXPECT_EQ(back[5], 0.0f);
    EXPECT_EQ(back[70], 0.0f);
    for (size_t i = 0; i < back.size(); ++i) {
      if (i != 5 && i != 70) {
        ASSERT_NEAR(back[i], w[i], 0.13f) << "i=" << i;
      }
    }
  }
}

// The input-major int4 layout (SparseI4Gemm's) holds the packed panels' levels and scales, from
// either orientation of the checkpoint tensor, and its stated size.
TEST(Int4Test, InputMajorHoldsThePackedLevels) {
  for (auto [out, in] : {std::pair{45, 20}, std::pair{64, 32}, std::pair{130, 100}}) {
    const std::vector<float> w = Random(static_cast<size_t>(out) * in, 23);
    std::vector<float> wt(w.size());  // [in][out]
    for (int o = 0; o < out; ++o) {
      for (int i = 0; i < in; ++i) wt[static_cast<size_t>(i) * out + o] = w[o * in + i];
    }
    const TensorView transposed{"w", DType::kF32, {in, out}, wt.data(), wt.size() * 4};
    const Matrix packed = MatrixOf(w, out, in, WType::kI4, Layout::kPanels);
    for (const Matrix& major : {MatrixOf(w, out, in, WType::kI4, Layout::kInputRows),
                                MakeMatrix(transposed, true, WType::kI4, Layout::kInputRows)}) {
      EXPECT_EQ(major.bytes(), I4InputMajorBytes(out, in));
      EXPECT_EQ(static_cast<int64_t>(major.chunks.size()), major.bytes());
      EXPECT_EQ(UnpackMatrix(major), UnpackMatrix(packed)) << "out=" << out << " in=" << in;
    }
  }
}

// A NaN or an infinity in x makes its group's products NaN (as f32 products would), not garbage
// from converting NaN to an integer; a zero group rounds to zero.
TEST(Int4Test, NonFiniteInputsGiveNaNAndZeroGroupsZero) {
  const int in = 64, out = 32;
  const Matrix m =
      MatrixOf(Random(static_cast<size_t>(out) * in, 3), out, in, WType::kI4, Layout::kPanels);
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = Random(in, 4);
    x[40] = bad;
    for (int i = 0; i < 32; ++i) x[i] = 0.0f;
    std::vector<int8_t> xq(in, 99);
    std::vector<float> xscale(2);
    std::vector<int32_t> xsum(2);
    QuantizeRowsI4(x.data(), in, 1, in, xq.data(), xscale.data(), xsum.data());
    EXPECT_EQ(xscale[0], 0.0f);
    EXPECT_TRUE(std::isnan(xscale[1]));
    for (int8_t q : xq) ASSERT_EQ(q, 0);
    std::vector<float> y(out);
    I4Gemm(m.data(), in, out, 0, 1, xq.data(), xscale.data(), xsum.data(), 1, y.data(), out, false);
    for (float v : y) ASSERT_TRUE(std::isnan(v));
  }
}

// The integer products: I4Gemm on int4 panels, or I8DotGemm on int8 chunked panels (an int4
// model's head), through the dispatcher (with x interleaved by the caller when xi is given) or
// the scalar kernel.
struct DotProduct {
  WType type;
  Layout layout;
  void operator()(bool scalar_kernel, const Matrix& m, int in, int out, int p0, int p1,
                  const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                  bool acc, const int32_t* xi = nullptr) const {
    if (scalar_kernel) {
      if (type == WType::kI4) {
        scalar::I4Gemm(m.data(), in, out, p0, p1, xq, xscale, xsum, rows, y, out, acc);
      } else {
        scalar::I8DotGemm(m.data(), m.scale.data(), in, out, p0, p1, xq, xscale, xsum, rows, y, out,
                          acc);
      }
    } else if (type == WType::kI4) {
      I4Gemm(m.data(), in, out, p0, p1, xq, xscale, xsum, rows, y, out, acc, xi);
    } else {
      I8DotGemm(m.data(), m.scale.data(), in, out, p0, p1, xq, xscale, xsum, rows, y, out, acc, xi);
    }
  }
};
constexpr DotProduct kDotProducts[] = {{WType::kI4, Layout::kPanels},
                                       {WType::kI8, Layout::kDotChunks}};

// int8 chunked panels hold int8's packed weights (the same rounding, the same scales), and the
// scalar I8DotGemm computes their product with the rounded x (in double, within f32 rounding).
TEST(Int4Test, Int8ChunksHoldInt8WeightsAndTheScalarKernelMultipliesThem) {
  for (int in : {1, 33, 100}) {
    const int out = 45, rows = 3, groups = (in + kI4Group - 1) / kI4Group;
    const std::vector<float> w = Random(static_cast<size_t>(out) * in, 31);
    const Matrix m = MatrixOf(w, out, in, WType::kI8, Layout::kDotChunks);
    ASSERT_EQ(m.bytes(), 2 * I8DotPanelBytes(in) + 4 * out);
    const std::vector<float> back = UnpackMatrix(m);
    EXPECT_EQ(back, UnpackMatrix(MatrixOf(w, out, in, WType::kI8, Layout::kPanels)));
    const std::vector<float> x = Random(static_cast<size_t>(rows) * in, 32);
    std::vector<int8_t> xq(static_cast<size_t>(rows) * groups * kI4Group);
    std::vector<float> xscale(static_cast<size_t>(rows) * groups);
    std::vector<int32_t> xsum(xscale.size());
    QuantizeRowsI4(x.data(), in, rows, in, xq.data(), xscale.data(), xsum.data());
    std::vector<float> y(static_cast<size_t>(rows) * out, 7.0f);
    kDotProducts[1](true, m, in, out, 0, 2, xq.data(), xscale.data(), xsum.data(), rows, y.data(),
                    /*acc=*/true);
    for (int b = 0; b < rows; ++b) {
      for (int o = 0; o < out; ++o) {
        double s = 7.0, mag = 7.0;
        for (int i = 0; i < in; ++i) {
          const int64_t at = int64_t{b} * groups + i / kI4Group;
          const double xr = double(xq[at * kI4Group + i % kI4Group]) * xscale[at];
          s += double(back[o * in + i]) * xr;
          mag += std::abs(double(back[o * in + i]) * xr);
        }
        ASSERT_NEAR(y[b * out + o], s, 1e-6 * mag) << "in=" << in << " b=" << b << " o=" << o;
      }
    }
  }
}

// Every ISA gives the scalar kernel's bits on both integer-product layouts for every row count
// (tiles of 1..12 rows, balanced splits above), partial groups, panel ranges and the matrix's
// edge; columns outside the range untouched; a row's result the same alone or in a batch.
TEST_P(KernelIsaTest, IntegerProductsAreBitIdenticalToScalarAndBatchInvariant) {
  for (const DotProduct& product : kDotProducts) {
    for (int in : {1, 16, 45, 96, 800}) {
      const int out = 7 * 32 + 5;  // 8 panels, the last 5 columns wide
      const int groups = (in + kI4Group - 1) / kI4Group;
      const std::vector<float> w = Random(static_cast<size_t>(out) * in, 1);
      const Matrix m = MatrixOf(w, out, in, product.type, product.layout);
      const int max_rows = 40;
      const std::vector<float> x = Random(static_cast<size_t>(max_rows) * in, 2);
      std::vector<int8_t> xq(static_cast<size_t>(max_rows) * groups * kI4Group);
      std::vector<float> xscale(static_cast<size_t>(max_rows) * groups);
      std::vector<int32_t> xsum(xscale.size());
      QuantizeRowsI4(x.data(), in, max_rows, in, xq.data(), xscale.data(), xsum.data());
      for (int rows = 1; rows <= max_rows; rows += rows < 14 ? 1 : 13) {
        for (bool acc : {false, true}) {
          for (auto [p0, p1] : {std::pair{0, 8}, std::pair{1, 8}, std::pair{4, 5}}) {
            const std::vector<float> before = Random(static_cast<size_t>(rows) * out, 3);
            std::vector<float> y = before, ref = before, y_xi = before;
            product(false, m, in, out, p0, p1, xq.data(), xscale.data(), xsum.data(), rows,
                    y.data(), acc);
            product(true, m, in, out, p0, p1, xq.data(), xscale.data(), xsum.data(), rows,
                    ref.data(), acc);
            // x interleaved once by the caller (LinearRunner's way), poison past its end.
            std::vector<int32_t> xi(InterleavedRowsI4Words(rows, in) + 64, 0x7F7F7F7F);
            InterleaveRowsI4(xq.data(), rows, in, xi.data());
            product(false, m, in, out, p0, p1, xq.data(), xscale.data(), xsum.data(), rows,
                    y_xi.data(), acc, xi.data());
            for (size_t i = 0; i < y.size(); ++i) {
              ASSERT_EQ(y[i], ref[i])
                  << "type=" << static_cast<int>(product.type) << " in=" << in << " rows=" << rows
                  << " p=" << p0 << ".." << p1 << " acc=" << acc << " i=" << i;
              ASSERT_EQ(y_xi[i], ref[i])
                  << "interleaved by the caller: in=" << in << " rows=" << rows << " i=" << i;
              const int col = static_cast<int>(i % out);
              if (col < p0 * kPanelCols || col >= p1 * kPanelCols) {
                ASSERT_EQ(y[i], before[i]);
              }
            }
            if (acc || p0 != 0 || p1 != 8) continue;
            for (int r = 0; r < rows; r += 5) {  // each row alone, rounded alone: the same bits
              std::vector<int8_t> q1(static_cast<size_t>(groups) * kI4Group);
              std::vector<float> s1(groups);
              std::vector<int32_t> n1(groups);
              QuantizeRowsI4(x.data() + static_cast<size_t>(r) * in, in, 1, in, q1.data(),
                             s1.data(), n1.data());
              std::vector<float> one(out);
              product(false, m, in, out, 0, 8, q1.data(), s1.data(), n1.data(), 1, one.data(),
                      false);
              for (int o = 0; o < out; ++o) {
                ASSERT_EQ(one[o], y[static_cast<size_t>(r) * out + o])
                    << "in=" << in << " rows=" << rows << " r=" << r << " o=" << o;
              }
            }
          }
        }
      }
    }
  }
}

// Input-major weights (Layout::kInputRows) give the packed panels' bits: PanelGemm over their
// strided panels for every row count, and SparseRowsGemm, which reads only the rows of the
// inputs listed as nonzero, up to kSparseMaxRows rows; columns outside the range untouched.
TEST_P(KernelIsaTest, InputMajorProductsAreBitIdenticalToThePackedOnes) {
  for (int in : {1, 77, 300}) {
    const int out = 37 + 64;  // 4 column groups, the last 5 columns wide
    const std::vector<float> w = Random(static_cast<size_t>(out) * in, 1);
    const int max_rows = 40;
    const std::vector<float> x = MostlyZero(max_rows, in, 2);
    for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
      const Matrix packed = MatrixOf(w, out, in, wt, Layout::kPanels);
      const Matrix major = MatrixOf(w, out, in, wt, Layout::kInputRows);
      const float* scale = wt == WType::kI8 ? packed.scale.data() : nullptr;
      ASSERT_EQ(packed.scale, major.scale);
      for (int rows : {1, 2, 3, 4, 5, 12, 13, max_rows}) {
        std::vector<int32_t> nonzero;
        for (int i = 0; i < in; ++i) {
          bool any = false;
          for (int b = 0; b < rows; ++b) any |= x[static_cast<size_t>(b) * in + i] != 0.0f;
          if (any) nonzero.push_back(i);
        }
        std::vector<float> xp(static_cast<size_t>(rows) * in);
        PackRows(x.data(), in, rows, in, xp.data());
        for (bool acc : {false, true}) {
          for (auto [p0, p1] : {std::pair{0, 4}, std::pair{1, 4}, std::pair{0, 1}}) {
            const std::vector<float> before = Random(static_cast<size_t>(rows) * out, 3);
            std::vector<float> ref = before, strided = before, sparse = before;
            scalar::PanelGemm(wt, packed.data(), scale, in, out, p0, p1, xp.data(), rows,
                              ref.data(), out, acc);
            PanelGemm(wt, major.data(), scale, in, out, major.geometry(), p0, p1, xp.data(), rows,
                      strided.data(), out, acc);
            if (rows <= kSparseMaxRows) {
              std::vector<float> scratch(static_cast<size_t>(rows) * kPanelCols * (p1 - p0));
              SparseRowsGemm(wt, major.data(), scale, out, major.geometry().row_stride, p0, p1,
                             x.data(), in, rows, nonzero.data(), static_cast<int>(nonzero.size()),
                             sparse.data(), out, acc, scratch.data());
            }
            for (size_t i = 0; i < ref.size(); ++i) {
              const auto where = testing::Message() << "in=" << in << " rows=" << rows
                                                    << " wt=" << static_cast<int>(wt) << " p=" << p0
                                                    << ".." << p1 << " acc=" << acc << " i=" << i;
              ASSERT_EQ(strided[i], ref[i]) << where;
              if (rows <= kSparseMaxRows) {
                ASSERT_EQ(sparse[i], ref[i]) << where;
              }
              const int col = static_cast<int>(i % out);
              if (col < p0 * kPanelCols || col >= p1 * kPanelCols) {
                ASSERT_EQ(ref[i], before[i]) << where;
                ASSERT_EQ(sparse[i], before[i]) << where;
              }
            }
          }
        }
      }
    }
  }
}

// The listed inputs are all that SparseRowsGemm reads: weights of the unlisted inputs may hold
// anything (here NaN) without changing a bit.
TEST_P(KernelIsaTest, SparseRowsGemmReadsOnlyTheListedInputs) {
  const int in = 64, out = 64, rows = 3;
  std::vector<float> w = Random(static_cast<size_t>(out) * in, 7);
  const std::vector<float> x = MostlyZero(rows, in, 8);
  std::vector<int32_t> nonzero;
  for (int i = 0; i < in; ++i) {
    bool any = false;
    for (int b = 0; b < rows; ++b) any |= x[static_cast<size_t>(b) * in + i] != 0.0f;
    if (any) nonzero.push_back(i);
  }
  ASSERT_LT(nonzero.size(), static_cast<size_t>(in));
  std::vector<float> poisoned = w;
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      if (!std::binary_search(nonzero.begin(), nonzero.end(), i)) {
        poisoned[static_cast<size_t>(o) * in + i] = std::nanf("");
      }
    }
  }
  for (WType wt : {WType::kF32, WType::kBF16}) {
    const Matrix clean = MatrixOf(w, out, in, wt, Layout::kInputRows);
    const Matrix dirty = MatrixOf(poisoned, out, in, wt, Layout::kInputRows);
    std::vector<float> a(rows * out), b(rows * out), scratch(rows * out);
    for (const auto& [m, y] : {std::pair{&clean, &a}, std::pair{&dirty, &b}}) {
      SparseRowsGemm(wt, m->data(), nullptr, out, m->geometry().row_stride, 0, 2, x.data(), in,
                     rows, nonzero.data(), static_cast<int>(nonzero.size()), y->data(), out, false,
                     scratch.data());
    }
    EXPECT_EQ(a, b);
  }
}

// SparseI4Gemm gives I4Gemm's bits (the scalar kernel's, on the packed panels) on every ISA for 1
// to kSparseMaxRows rows, block ranges and the matrix's edge, reading only the listed inputs; a
// group with a NaN in x and no listed input (its x rounded to zeros) still makes its row NaN as
// there; columns outside the range untouched.
TEST_P(KernelIsaTest, SparseI4GemmGivesI4GemmsBits) {
  for (int in : {1, 45, 96, 300}) {
    const int out = 2 * kI4RowCols + 37;  // 3 blocks of 64 columns, 6 panels, the last partial
    const std::vector<float> w = Random(static_cast<size_t>(out) * in, 31);
    const Matrix packed = MatrixOf(w, out, in, WType::kI4, Layout::kPanels);
    const Matrix major = MatrixOf(w, out, in, WType::kI4, Layout::kInputRows);
    std::vector<float> x = MostlyZero(kSparseMaxRows, in, 32);
    if (in > 3 * kI4Group) {  // group 2: zero but for a NaN in row 2 (no input of it listed)
      for (int b = 0; b < kSparseMaxRows; ++b) {
        for (int i = 2 * kI4Group; i < 3 * kI4Group; ++i) x[static_cast<size_t>(b) * in + i] = 0;
      }
      x[static_cast<size_t>(2) * in + 2 * kI4Group + 1] = std::nanf("");
    }
    const RoundedX r(x, kSparseMaxRows, in);
    for (int rows = 1; rows <= kSparseMaxRows; ++rows) {
      const std::vector<int32_t> nz = r.Nonzero(rows, in);
      for (bool acc : {false, true}) {
        for (auto [k0, k1] : {std::pair{0, 3}, std::pair{1, 3}, std::pair{0, 1}}) {
          const int p0 = 2 * k0, p1 = std::min(packed.panels(), 2 * k1);
          const std::vector<float> before = Random(static_cast<size_t>(rows) * out, 33);
          std::vector<float> ref = before, got = before, twin = before;
          scalar::I4Gemm(packed.data(), in, out, p0, p1, r.q.data(), r.scale.data(), r.sum.data(),
                         rows, ref.data(), out, acc);
          std::vector<float> scratch(static_cast<size_t>(rows) * kI4RowCols * (k1 - k0));
          SparseI4Gemm(major.data(), in, out, k0, k1, r.q.data(), r.scale.data(), r.sum.data(),
                       rows, nz.data(), static_cast<int>(nz.size()), got.data(), out, acc,
                       scratch.data());
          scalar::SparseI4Gemm(major.data(), in, out, k0, k1, r.q.data(), r.scale.data(),
                               r.sum.data(), rows, nz.data(), static_cast<int>(nz.size()),
                               twin.data(), out, acc, scratch.data());
          for (size_t i = 0; i < ref.size(); ++i) {
            const auto where = testing::Message() << "in=" << in << " rows=" << rows << " k=" << k0
                                                  << ".." << k1 << " acc=" << acc << " i=" << i;
            // EXPECT_EQ on floats would call NaN unequal to itself: compare the bits.
            ASSERT_EQ(std::isnan(got[i]), std::isnan(ref[i])) << where;
            if (!std::isnan(ref[i])) {
              ASSERT_EQ(got[i], ref[i]) << where;
              ASSERT_EQ(twin[i], ref[i]) << where;
            }
          }
        }
      }
    }
  }
}

// The listed inputs are all SparseI4Gemm reads: the rows of the other inputs, and the scales of
// groups with no listed input, may hold anything without changing a bit.
TEST_P(KernelIsaTest, SparseI4GemmReadsOnlyTheListedInputs) {
  const int in = 160, out = 128, rows = 2;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 41);
  std::vector<float> x = MostlyZero(rows, in, 42);
  for (int i = 64; i < 96; ++i) x[i] = x[in + i] = 0.0f;  // group 2 all zero
  const RoundedX r(x, rows, in);
  const std::vector<int32_t> nz = r.Nonzero(rows, in);
  ASSERT_LT(nz.size(), static_cast<size_t>(in) * 3 / 4);
  const Matrix clean = MatrixOf(w, out, in, WType::kI4, Layout::kInputRows);
  Matrix dirty = MatrixOf(w, out, in, WType::kI4, Layout::kInputRows);
  const int64_t words = I4ScaleRowWords(out), row_bytes = I4InputRowBytes(out);
  uint8_t* rows_at = dirty.chunks.data() + 2 * (in / kI4Group) * words;
  for (int i = 0; i < in; ++i) {
    if (!std::binary_search(nz.begin(), nz.end(), i)) {
      for (int64_t k = 0; k < row_bytes; ++k)
        rows_at[i * row_bytes + k] = static_cast<uint8_t>(k * 37 + i);
    }
  }
  for (int64_t o = 0; o < words; ++o) {  // group 2's scales: NaN
    dirty.chunks.data()[2 * (2 * words + o)] = 0xC0;
    dirty.chunks.data()[2 * (2 * words + o) + 1] = 0x7F;
  }
  std::vector<float> a(rows * out), b(rows * out), scratch(rows * out);
  for (const auto& [m, y] : {std::pair<const Matrix*, std::vector<float>*>{&clean, &a},
                             std::pair<const Matrix*, std::vector<float>*>{&dirty, &b}}) {
    SparseI4Gemm(m->data(), in, out, 0, 2, r.q.data(), r.scale.data(), r.sum.data(), rows,
                 nz.data(), static_cast<int>(nz.size()), y->data(), out, false, scratch.data());
  }
  EXPECT_EQ(a, b);
}

// A row's result does not depend on the other rows of the call (the batch-invariance the
// scheduler relies on): row r of a 29-row call equals the same row computed alone.
TEST_P(KernelIsaTest, PanelGemmRowsAreBatchInvariant) {
  const int in = 96, out = 128, rows = 29;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 5);
  const Packed p = Pack(w, out, in);
  const std::vector<float> x = Random(static_cast<size_t>(rows) * in, 6);
  for (WType wt : {WType::kF32, WType::kBF16}) {
    std::vector<float> all(static_cast<size_t>(rows) * out);
    std::vector<float> xp(x.size());
    PackRows(x.data(), in, rows, in, xp.data());
    PanelGemm(wt, p.data(wt), nullptr, in, out, 0, 4, xp.data(), rows, all.data(), out, false);
    for (int r = 0; r < rows; ++r) {
      std::vector<float> one(out);
      // One row packs as itself.
      PanelGemm(wt, p.data(wt), nullptr, in, out, 0, 4, x.data() + r * in, 1, one.data(), out,
                false);
      for (int o = 0; o < out; ++o) ASSERT_EQ(one[o], all[r * out + o]) << "r=" << r;
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
  x.push_back(-101.5f);  // 1009 values: a partial last vector for every ISA's width
  std::vector<float> e = x, s = x, t = x, q = x;
  VecReluSquare(q.data(), static_cast<int64_t>(q.size()));
  VecExp(e.data(), static_cast<int64_t>(e.size()));
  VecSigmoid(s.data(), static_cast<int64_t>(s.size()));
  VecTanh(t.data(), static_cast<int64_t>(t.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double xe = std::exp(static_cast<double>(x[i]));
    EXPECT_NEAR(e[i], xe, 3e-7 * xe + 1e-38) << x[i];
    EXPECT_NEAR(s[i], 1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))), 2e-7) << x[i];
    const double th = std::tanh(static_cast<double>(x[i]));
    EXPECT_NEAR(t[i], th, 2e-7 + 1e-6 * std::abs(th)) << x[i];
    EXPECT_EQ(q[i], x[i] > 0 ? x[i] * x[i] : 0.0f) << x[i];
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

TEST_P(KernelIsaTest, SumMatchesExact) {
  for (int64_t n : {0, 5, 64, 1000, 4096 + 77}) {
    std::vector<float> x = Random(static_cast<size_t>(n), 12);
    double exact = 0;
    for (float v : x) exact += v;
    for (const bool prefetch : {true, false}) {
      EXPECT_NEAR(SumFloats(x.data(), n, prefetch), exact, 1e-4 * (1 + n / 100.0)) << n;
    }
  }
}

TEST_P(KernelIsaTest, LayerNormMatchesScalarAndWorksInPlace) {
  for (int n : {4, 64, 77, 768}) {
    std::vector<float> x = Random(n, 20, -3, 5), w = Random(n, 21), b = Random(n, 22);
    std::vector<float> out(n), ref(n), in_place = x;
    LayerNorm(x.data(), w.data(), b.data(), n, 1e-5f, out.data());
    scalar::LayerNorm(x.data(), w.data(), b.data(), n, 1e-5f, ref.data());
    LayerNorm(in_place.data(), w.data(), b.data(), n, 1e-5f, in_place.data());
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(out[i], ref[i], 2e-6f * (1 + std::abs(ref[i]))) << "n=" << n << " i=" << i;
      EXPECT_EQ(in_place[i], out[i]);
    }
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

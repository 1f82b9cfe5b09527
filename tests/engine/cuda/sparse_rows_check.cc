// The sparse value product (sparse_rows.cuh) against a plain loop over the widened weights.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/sparse_rows.cuh"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::Download;
using testing_util::OnDevice;
using testing_util::Upload;

struct Case {
  int out, in, rows;
  bool accumulate;
};

class SparseRowsTest : public OnDevice<::testing::Test> {
 protected:
  // x for a case: about 60% zeros, every third input zero in every row (skipped whatever the
  // row count), row 1 all zeros; the weights of inputs zero in every row are NaN, so reading one
  // would show.
  struct Data {
    std::vector<uint16_t> w;  // [in][out]
    std::vector<float> wf, x, y;
  };
  Data Make(const Case& c, HalfType type, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    Data d;
    d.x.resize(static_cast<size_t>(c.rows) * c.in);
    for (int r = 0; r < c.rows; ++r) {
      for (int i = 0; i < c.in; ++i) {
        const bool zero = r == 1 || i % 3 == 0 || rng() % 10 < 6;
        d.x[static_cast<size_t>(r) * c.in + i] = zero ? 0.0f : normal(rng);
      }
    }
    d.w.resize(static_cast<size_t>(c.in) * c.out);
    d.wf.resize(d.w.size());
    for (int i = 0; i < c.in; ++i) {
      bool used = false;
      for (int r = 0; r < c.rows; ++r) used |= d.x[static_cast<size_t>(r) * c.in + i] != 0.0f;
      for (int o = 0; o < c.out; ++o) {
        const size_t k = static_cast<size_t>(i) * c.out + o;
        const float v = used ? normal(rng) : std::nanf("");
        d.w[k] = type == HalfType::kBF16 ? F32ToBF16(v) : F32ToF16(v);
        d.wf[k] = type == HalfType::kBF16 ? BF16ToF32(d.w[k]) : F16ToF32(d.w[k]);
      }
    }
    d.y.resize(static_cast<size_t>(c.rows) * c.out);
    for (float& v : d.y) v = normal(rng);
    return d;
  }

  static std::vector<float> Want(const Case& c, const Data& d) {
    std::vector<float> want = d.y;
    for (int r = 0; r < c.rows; ++r) {
      for (int o = 0; o < c.out; ++o) {
        double acc = 0;
        for (int i = 0; i < c.in; ++i) {
          const float xv = d.x[static_cast<size_t>(r) * c.in + i];
          if (xv != 0.0f) acc += static_cast<double>(d.wf[static_cast<size_t>(i) * c.out + o]) * xv;
        }
        float& dst = want[static_cast<size_t>(r) * c.out + o];
        dst = static_cast<float>(c.accumulate ? dst + acc : acc);
      }
    }
    return want;
  }

  // Runs the product `times` times on fresh copies of y (the tickets must come back to zero
  // between launches) and returns each result.
  std::vector<std::vector<float>> Run(const Case& c, HalfType type, const Data& d, int times) {
    DeviceBuffer<uint16_t> w = Upload(d.w);
    DeviceBuffer<float> x = Upload(d.x);
    const int64_t partial_floats = SparseRowsScratchFloats(c.out, c.in, c.rows);
    DeviceBuffer<float> partial =
        Upload(std::vector<float>(static_cast<size_t>(std::max<int64_t>(partial_floats, 1))));
    DeviceBuffer<unsigned> tickets =
        Upload(std::vector<unsigned>(static_cast<size_t>(SparseRowsTickets(c.out)), 0u));
    std::vector<std::vector<float>> results;
    for (int t = 0; t < times; ++t) {
      DeviceBuffer<float> y = Upload(d.y);
      const absl::Status st =
          LaunchSparseRowsHalf(stream_.get(), type, w.get(), c.out, c.in, x.get(), c.rows, y.get(),
                               c.accumulate, {partial.get(), tickets.get()});
      EXPECT_TRUE(st.ok()) << st;
      EXPECT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
      results.push_back(Download(y, d.y.size()));
    }
    EXPECT_EQ(Download(tickets, static_cast<size_t>(SparseRowsTickets(c.out))),
              std::vector<unsigned>(static_cast<size_t>(SparseRowsTickets(c.out)), 0u));
    return results;
  }
};

// Both weight types; one slice of inputs and several (the last partial); column tiles whole and
// partial, for the 8-column lanes (up to 8 rows) and the 4-column ones (9 to 15 rows); with and
// without accumulation. Weights of the
// skipped inputs are NaN and must not show; a second launch gives the same bits (deterministic, the
// tickets reset).
TEST_F(SparseRowsTest, MatchesAPlainLoopAndReadsOnlyNonzeroInputs) {
  const int big = testing_util::kEmulated ? 600 : 3072;
  for (const HalfType type : {HalfType::kBF16, HalfType::kF16}) {
    for (const Case& c : {Case{256, 200, 1, false}, Case{64, 2 * big, 1, true},
                          Case{264, 700, 3, true}, Case{8, 40, 8, false}, Case{520, big, 9, true},
                          Case{136, 513, 15, false}, Case{128, 256, 2, true}}) {
      const Data d = Make(c, type, static_cast<uint32_t>(c.out * 31 + c.rows));
      const std::vector<std::vector<float>> got = Run(c, type, d, 2);
      const std::string what = "out " + std::to_string(c.out) + " in " + std::to_string(c.in) +
                               " rows " + std::to_string(c.rows);
      testing_util::ExpectNear(got[0], Want(c, d), 1e-4f * std::sqrt(static_cast<float>(c.in)),
                               what);
      EXPECT_EQ(got[0], got[1]) << what << ": a second launch differs";
    }
  }
}

// A row's results do not depend on the other rows of the call: row 0 alone and with 7 more.
// (Rows 9 to 15 share their lanes' columns differently: 4 per lane, the same sums.)
TEST_F(SparseRowsTest, ARowsResultsDoNotDependOnTheOthers) {
  const Case all{192, 900, 8, false}, one{192, 900, 1, false};
  const Data d = Make(all, HalfType::kBF16, 5);
  Data alone = d;
  alone.x.resize(static_cast<size_t>(one.in));  // row 0
  alone.y.resize(static_cast<size_t>(one.out));
  const std::vector<float> batched = Run(all, HalfType::kBF16, d, 1)[0];
  const std::vector<float> single = Run(one, HalfType::kBF16, alone, 1)[0];
  // Row 0 alone skips more inputs (zero in row 0, nonzero in others): exactly zero terms.
  for (int o = 0; o < one.out; ++o) EXPECT_EQ(single[o], batched[o]) << "column " << o;
}

TEST_F(SparseRowsTest, RefusesBadArguments) {
  const SparseRowsScratch none;
  float* p = reinterpret_cast<float*>(16);
  const uint16_t* w = reinterpret_cast<const uint16_t*>(16);
  for (const auto& [out, in, rows] :
       {std::tuple{12, 8, 1}, std::tuple{8, 0, 1}, std::tuple{8, 8, 16}, std::tuple{0, 8, 1}}) {
    EXPECT_EQ(
        LaunchSparseRowsHalf(stream_.get(), HalfType::kBF16, w, out, in, p, rows, p, false, none)
            .code(),
        absl::StatusCode::kInvalidArgument)
        << out << " " << in << " " << rows;
  }
  // Several slices of inputs need the scratch; a misaligned weight matrix is refused.
  EXPECT_EQ(
      LaunchSparseRowsHalf(stream_.get(), HalfType::kBF16, w, 8, 300, p, 1, p, false, none).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSparseRowsHalf(stream_.get(), HalfType::kBF16, w + 1, 8, 8, p, 1, p, false, none)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      LaunchSparseRowsHalf(stream_.get(), HalfType::kBF16, w, 8, 8, p, 0, p, false, none).ok());
}

}  // namespace
}  // namespace modrwkv::cuda

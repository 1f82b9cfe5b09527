// LinearRunner (engine/cpu/linear.h) over the layouts its products choose between: the same bits
// whichever it reads, and counts that say which.
#include "engine/cpu/linear.h"

#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/engine/cpu/kernel_test_util.h"

namespace modrwkv::cpu {
namespace {

using testing_kernels::MatrixOf;
using testing_kernels::MostlyZero;
using testing_kernels::Random;
using testing_kernels::RoundedX;

// LinearRunner over an input-major matrix: the packed matrix's bits for every row count (the
// sparse products up to kSparseMaxRows, strided panels above), on two and three threads, and
// its counts say how many inputs were read.
TEST(LinearRunnerTest, InputMajorMatrixGivesThePackedResults) {
  const int in = 300, out = 200;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 9);
  const std::vector<float> x = MostlyZero(20, in, 10);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    LinearRunner lin(&pool);
    int64_t inputs = 0, read = 0;
    for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
      const Matrix packed = MatrixOf(w, out, in, wt, Layout::kPanels);
      const Matrix major = MatrixOf(w, out, in, wt, Layout::kInputRows);
      for (int rows = 1; rows <= 20; ++rows) {
        std::vector<float> a(static_cast<size_t>(rows) * out, 1.0f), b = a;
        lin.Run(packed, x.data(), in, rows, a.data(), out, /*accumulate=*/true);
        lin.Run(major, x.data(), in, rows, b.data(), out, /*accumulate=*/true);
        ASSERT_EQ(a, b) << "threads=" << threads << " rows=" << rows;
        if (rows > kSparseMaxRows) continue;
        inputs += in;
        for (int i = 0; i < in; ++i) {
          bool any = false;
          for (int r = 0; r < rows; ++r) any |= x[static_cast<size_t>(r) * in + i] != 0.0f;
          read += any;
        }
      }
    }
    EXPECT_EQ(lin.sparse_counts().inputs, inputs);
    EXPECT_EQ(lin.sparse_counts().read, read);
    EXPECT_LT(read, inputs * 3 / 4);  // the test's x really is sparse
  }
}

// RunSkippingZeros reads the input-major copy when few inputs are nonzero and the packed matrix
// when many are (its counts say which), with the packed matrix's bits either way.
TEST(LinearRunnerTest, SkippingZerosPicksTheCopyByDensityWithTheSameBits) {
  const int in = 400, out = 96;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 11);
  const std::vector<float> dense = Random(static_cast<size_t>(8) * in, 12);
  const std::vector<float> sparse = MostlyZero(8, in, 13);
  ThreadPool pool(2);
  for (WType wt : {WType::kF32, WType::kBF16, WType::kI8}) {
    const Matrix packed = MatrixOf(w, out, in, wt, Layout::kPanels);
    const Matrix major = MatrixOf(w, out, in, wt, Layout::kInputRows);
    for (int rows = 1; rows <= 8; ++rows) {
      for (const auto* x : {&dense, &sparse}) {
        LinearRunner lin(&pool);
        std::vector<float> want(static_cast<size_t>(rows) * out, 1.0f), got = want;
        lin.Run(packed, x->data(), in, rows, want.data(), out, /*accumulate=*/true);
        lin.RunSkippingZeros(packed, major, x->data(), in, rows, got.data(), out,
                             /*accumulate=*/true);
        ASSERT_EQ(got, want) << "rows=" << rows;
        int nonzero = 0;
        for (int i = 0; i < in; ++i) {
          bool any = false;
          for (int r = 0; r < rows; ++r) any |= (*x)[static_cast<size_t>(r) * in + i] != 0.0f;
          nonzero += any;
        }
        const bool skips = rows <= kSparseMaxRows &&
                           nonzero <= LinearRunner::kSparseMaxDensity * static_cast<double>(in);
        EXPECT_EQ(skips, x == &sparse && rows <= kSparseMaxRows) << "rows=" << rows;
        EXPECT_EQ(lin.sparse_counts().inputs, rows <= kSparseMaxRows ? in : 0);
        EXPECT_EQ(lin.sparse_counts().read, rows > kSparseMaxRows ? 0
                                            : skips               ? nonzero
                                                                  : in)
            << "rows=" << rows;
      }
    }
  }
}

// LinearRunner over an int4 input-major matrix: the packed matrix's bits for every row count
// (Run: kSparseMaxRows rows at a time; RunSkippingZeros: the copy when few rounded inputs are
// nonzero, the packed matrix otherwise), on two and three threads, its counts those rounded inputs.
TEST(LinearRunnerTest, Int4InputMajorGivesThePackedResults) {
  const int in = 300, out = 200;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 51);
  const std::vector<float> sparse = MostlyZero(20, in, 52);
  const std::vector<float> dense = Random(static_cast<size_t>(20) * in, 53);
  const Matrix packed = MatrixOf(w, out, in, WType::kI4, Layout::kPanels);
  const Matrix major = MatrixOf(w, out, in, WType::kI4, Layout::kInputRows);
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    for (int rows = 1; rows <= 20; ++rows) {
      for (const auto* x : {&sparse, &dense}) {
        LinearRunner lin(&pool);
        std::vector<float> want(static_cast<size_t>(rows) * out, 1.0f), got = want, skip = want;
        lin.Run(packed, x->data(), in, rows, want.data(), out, /*accumulate=*/true);
        lin.Run(major, x->data(), in, rows, got.data(), out, /*accumulate=*/true);
        ASSERT_EQ(got, want) << "threads=" << threads << " rows=" << rows;
        LinearRunner counted(&pool);
        counted.RunSkippingZeros(packed, major, x->data(), in, rows, skip.data(), out,
                                 /*accumulate=*/true);
        ASSERT_EQ(skip, want) << "threads=" << threads << " rows=" << rows;
        if (rows > kSparseMaxRows) {
          EXPECT_EQ(counted.sparse_counts().inputs, 0);
          continue;
        }
        const int nonzero = static_cast<int>(RoundedX(*x, rows, in).Nonzero(rows, in).size());
        const bool skips = nonzero <= LinearRunner::kSparseMaxDensityI4 * static_cast<double>(in);
        // The sparse x: ~27% nonzero in rows 0 and 2 (row 1 is zero), more in their unions.
        EXPECT_EQ(skips, x == &sparse && rows <= 2) << "rows=" << rows;
        EXPECT_EQ(counted.sparse_counts().inputs, in);
        EXPECT_EQ(counted.sparse_counts().read, skips ? nonzero : in) << "rows=" << rows;
      }
    }
  }
}

}  // namespace
}  // namespace modrwkv::cpu

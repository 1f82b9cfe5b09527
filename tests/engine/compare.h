// Comparing two backends' outputs or states: the largest difference between two vectors,
// measured in standard deviations of the first (the reference).
#pragma once

#include <algorithm>
#include <cmath>

#include "absl/types/span.h"
#include "gtest/gtest.h"

namespace modrwkv::testing_util {

// The (population) standard deviation of a.
inline double StdDev(absl::Span<const float> a) {
  double mean = 0, var = 0;
  for (float v : a) mean += v;
  mean /= a.size();
  for (float v : a) var += (v - mean) * (v - mean);
  return std::sqrt(var / a.size());
}

// max |a - b| relative to the standard deviation of a (a and b of the same size).
inline double RelErr(absl::Span<const float> a, absl::Span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - b[i]));
  }
  return err / (StdDev(a) + 1e-30);
}

}  // namespace modrwkv::testing_util

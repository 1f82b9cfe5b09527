// Comparing two backends' outputs or states: the largest difference between two vectors,
// measured in standard deviations of the first (the reference).
#pragma once

#include <algorithm>
#include <cmath>

#include "absl/types/span.h"
#include "gtest/gtest.h"

namespace modrwkv::testing_util {

// max |a - b| relative to the standard deviation of a (a and b of the same size).
inline double RelErr(absl::Span<const float> a, absl::Span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  double mean = 0, var = 0, err = 0;
  for (float v : a) mean += v;
  mean /= a.size();
  for (float v : a) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / a.size()) + 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - b[i]));
  }
  return err / sd;
}

}  // namespace modrwkv::testing_util

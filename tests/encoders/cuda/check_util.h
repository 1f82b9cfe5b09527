// What the encoders' GPU checks share: whether there is a device, and the error measure of a
// GPU result against the CPU's.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cuda/cuda_check.h"
#include "gtest/gtest.h"

namespace modrwkv::encoders::cuda {

inline bool HaveDevice() {
  absl::StatusOr<int> n = modrwkv::cuda::CudaDeviceCount();
  return n.ok() && *n > 0;
}

// max |a - b| over the standard deviation of a (infinite when b has a NaN or infinity).
inline double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double mean = 0, var = 0, err = 0;
  for (float v : a) mean += v;
  mean /= a.size();
  for (float v : a) var += (v - mean) * (v - mean);
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(b[i])) return INFINITY;
    err = std::max(err, std::abs(double(a[i]) - b[i]));
  }
  return err / (std::sqrt(var / a.size()) + 1e-30);
}

}  // namespace modrwkv::encoders::cuda

// Reading golden fixtures' raw float32 files and comparing outputs with them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace modrwkv::golden {

// A little-endian float32 file as written by numpy's tofile(); empty when unreadable.
inline std::vector<float> ReadF32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

// max |a - b| / max |b|: one scale for the whole tensor, so values near zero do not dominate.
inline double MaxRelDiff(absl::Span<const float> a, absl::Span<const float> b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < b.size() && i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

// max |a - b| / std(b): the golden tests' measure for logits (ARCHITECTURE.md: "within 1e-4 of
// their standard deviation").
inline double MaxDiffOverStd(absl::Span<const float> a, absl::Span<const float> b) {
  if (b.empty()) return 0;
  double mean = 0;
  for (float v : b) mean += v;
  mean /= static_cast<double>(b.size());
  double var = 0;
  for (float v : b) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / static_cast<double>(b.size()));
  double diff = 0;
  for (size_t i = 0; i < b.size() && i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return diff / std::max(sd, 1e-30);
}

}  // namespace modrwkv::golden

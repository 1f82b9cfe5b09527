// Reading tests/golden/audio/ (tools/golden/gen_audio_fixtures.py) in the audio tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders::testing {

inline std::string AudioGoldenPath(const std::string& rel) {
  return std::string(MODRWKV_GOLDEN_DIR) + "/audio/" + rel;
}

inline std::vector<uint8_t> ReadAudioBytes(const std::string& rel) {
  std::ifstream f(AudioGoldenPath(rel), std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline std::vector<float> ReadAudioF32(const std::string& rel) {
  return golden::ReadF32(AudioGoldenPath(rel));
}

inline nlohmann::json AudioManifest() {
  std::ifstream f(AudioGoldenPath("manifest.json"));
  return nlohmann::json::parse(f);
}

// The generator's synthetic_16k(n): a chirp under a tremolo plus LCG noise, quantised to int16.
inline std::vector<float> SyntheticClip(int n) {
  std::vector<float> x(static_cast<size_t>(n));
  uint32_t state = 12345;
  for (int i = 0; i < n; ++i) {
    const double t = i / 16000.0;
    const double phase = 2 * M_PI * (100.0 * t + 3900.0 * t * t / (2 * 32.5));
    const double am = 0.5 + 0.4 * std::sin(2 * M_PI * 0.7 * t);
    state = state * 1664525u + 1013904223u;
    const double lcg = (state >> 8) / 16777216.0 - 0.5;
    const double v = am * 0.5 * std::sin(phase) + 0.02 * lcg;
    x[i] = static_cast<float>(std::nearbyint(v * 32767) / 32768.0);
  }
  return x;
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return d;
}

}  // namespace modrwkv::encoders::testing

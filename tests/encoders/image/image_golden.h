// Reading tests/golden/image/ (tools/golden/gen_image_fixtures.py) in the image tests.
#pragma once

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace modrwkv::encoders::testing {

inline std::string GoldenPath(const std::string& rel) {
  return std::string(MODRWKV_GOLDEN_DIR) + "/image/" + rel;
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline nlohmann::json Manifest() {
  std::ifstream f(GoldenPath("manifest.json"));
  return nlohmann::json::parse(f);
}

// FNV-1a 64 as the generator writes it (hex).
inline std::string Fnv1a64(const std::vector<uint8_t>& data) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t b : data) h = (h ^ b) * 0x100000001B3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace modrwkv::encoders::testing

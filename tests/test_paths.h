// Where tests find shared inputs.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace modrwkv::testing_paths {

// The World vocabulary: MODRWKV_VOCAB if set, else the team's shared copy next to the repository
// (../shared), else the identical copy the product ships (assets/; installed next to the binary).
inline std::string WorldVocab() {
  if (const char* env = std::getenv("MODRWKV_VOCAB")) return env;
  const std::string shared =
      std::string(MODRWKV_SOURCE_DIR) + "/../shared/rwkv_vocab_v20230424.txt";
  if (std::filesystem::exists(shared)) return shared;
  return std::string(MODRWKV_SOURCE_DIR) + "/assets/rwkv_vocab_v20230424.txt";
}

}  // namespace modrwkv::testing_paths

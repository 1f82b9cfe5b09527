// Where the GPU tests find the project's assets: relative to the working directory first
// (tools/device-check.sh runs the packed binaries from a copy of the repository root on another
// machine), then in the source tree the test was built from. "" when neither has it.
#pragma once

#include <filesystem>
#include <string>

namespace modrwkv::cuda::testing_util {

inline std::string DemoAsset(const std::string& relative) {
  for (const std::string& p : {relative, std::string(MODRWKV_SOURCE_DIR) + "/" + relative}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

}  // namespace modrwkv::cuda::testing_util

// Checks shared by the checkpoint writers before they create any file.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv {

// Names non-empty and unique, dims non-negative, bytes.size() == numel * DTypeSize(dtype).
absl::Status ValidateTensorsForWrite(const std::vector<OwnedTensor>& tensors);

}  // namespace modrwkv

#include "engine/model.h"

#include "absl/strings/str_format.h"

namespace modrwkv {

absl::Status ModelOptions::Validate() const {
  if (num_slots < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("num_slots must be >= 1, got %d", num_slots));
  }
  if (state_memory_bytes < 0) {
    return absl::InvalidArgumentError("state_memory_bytes must be >= 0");
  }
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("threads must be >= 0, got %d", threads));
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

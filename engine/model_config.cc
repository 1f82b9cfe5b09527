#include "engine/model_config.h"

#include "absl/strings/str_format.h"
#include "engine/model.h"

namespace modrwkv {

std::string ModelConfig::ToString() const {
  return absl::StrFormat(
      "L%d C%d H%d N%d V%d F%d lora(w=%d a=%d v=%d g=%d)", n_layer, n_embd, n_head, head_size,
      vocab_size, ffn_size, d_decay, d_aaa, d_mv, d_gate);
}

absl::Status ModelOptions::Validate() const {
  if (num_slots < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("num_slots must be >= 1, got %d", num_slots));
  }
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("threads must be >= 0, got %d", threads));
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

#include "engine/model/model_config.h"

#include "absl/strings/str_format.h"

namespace modrwkv {

std::string ModelConfig::ToString() const {
  return absl::StrFormat("L%d C%d H%d N%d V%d F%d lora(w=%d a=%d v=%d g=%d)", n_layer, n_embd,
                         n_head, head_size, vocab_size, ffn_size, d_decay, d_aaa, d_mv, d_gate);
}

}  // namespace modrwkv

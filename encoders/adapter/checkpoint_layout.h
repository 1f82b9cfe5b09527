// Which ModRWKV checkpoint generation a tensor map is, told from its key names alone, and where
// its LLM, adapter and encoder tensors are (the official code's key prefixes).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "encoders/adapter/adapter_chain.h"
#include "engine/base/tensor.h"

namespace modrwkv::encoders {

struct CheckpointLayout {
  // 'A': bare RWKV7 keys + modality.world_encoder.{adapter,model}.* (the released checkpoints).
  // 'B': llm.* + proj.* (+ encoder.model.* when the encoder was trained).
  // 'C': as B, with a generation C projector (conv k6 s5, or pixel shuffle: proj.proj.weight).
  // 'T': a plain RWKV7 checkpoint, text only.
  char generation = 'T';
  std::string llm_prefix;      // "" or "llm."
  std::string adapter_prefix;  // "modality.world_encoder.adapter." or "proj."; "" for 'T'
  std::string encoder_prefix;  // "" when no encoder weights, else "modality.world_encoder.model."
                               // or "encoder.model."
  // Inferred from the keys present. What the keys cannot tell is taken from the official code:
  // the speech conv's padding (2, the current code; checkpoints trained with padding 0 need a
  // manifest override), the activations, and the earlier speech adapter's head count (8, as the
  // official code hard-codes it).
  AdapterSpec adapter;
};

// An unknown layout is an error naming the keys it expected and some it found. A generation B/C
// checkpoint without proj.* (its adapter was not trained in that run, so not saved) is an error
// saying the adapter must come from another file.
absl::StatusOr<CheckpointLayout> DetectCheckpointLayout(
    const std::map<std::string, TensorView>& tensors);

// The tensors whose names start with `prefix`, renamed without it (views are shared, not copied).
std::map<std::string, TensorView> StripPrefix(const std::map<std::string, TensorView>& tensors,
                                              const std::string& prefix);

// The LLM's tensors under bare RWKV7 names, for engine/loader's CreateModel: the llm_prefix is
// stripped, and generation A's modality.* tensors are left out.
std::map<std::string, TensorView> LlmTensors(const CheckpointLayout& layout,
                                             const std::map<std::string, TensorView>& tensors);

}  // namespace modrwkv::encoders

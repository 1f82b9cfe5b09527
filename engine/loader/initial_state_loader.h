// Reading trained initial states (engine/model/initial_state.h) from checkpoints.
//
// The format is RWKV-PEFT's state-tuning output: one tensor per layer,
// `blocks.{i}.att.time_state` of shape [H, N, N] (f32, bf16 or f16), the layer's WKV matrix
// indexed [head][value][key] — the layout the official `rwkv` package keeps its state in
// (state[i*3+1]), which RWKV-PEFT transposes into FLA's [key][value] only inside its kernels'
// wrapper. It is used as is, no transpose (tests/golden/rwkv7/initial_state checks it against the
// official package with an asymmetric state). RWKV-PEFT's merge_state.py writes the same tensors
// into a full model checkpoint: InitialStateFromTensors finds them there.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/model/initial_state.h"
#include "engine/model/model_config.h"

namespace modrwkv {

// The state held by `tensors` (a model's or a state file's): nullopt when there is no
// `blocks.{i}.att.time_state` at all; INVALID_ARGUMENT naming the tensor when one layer's is
// missing, has the wrong shape or type, or holds a value that is not finite.
absl::StatusOr<std::optional<InitialState>> InitialStateFromTensors(
    std::string name, const std::map<std::string, TensorView>& tensors, const ModelConfig& config);

// A state file (.pth or .safetensors, detected from its content): exactly the n_layer
// `time_state` tensors; any other tensor is an error (a model checkpoint given by mistake).
absl::StatusOr<InitialState> LoadInitialState(std::string name, const std::string& path,
                                              const ModelConfig& config);

}  // namespace modrwkv

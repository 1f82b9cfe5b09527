// Builds a Model from a checkpoint file or from in-memory tensors, on the configured backend.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/model.h"

namespace modrwkv {

// Opens `path` (.pth or .safetensors, detected from the content) and builds the backend that
// options.device names (the CPU, or a GPU in a build with the CUDA backend).
// `checkpoint` says what to verify while opening (CRC-32 of .pth entries by default).
absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path,
                                                 const ModelOptions& options,
                                                 const CheckpointOptions& checkpoint = {});

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const std::map<std::string, TensorView>& tensors,
                                                   const ModelOptions& options);

}  // namespace modrwkv

// Loading helpers shared by the encoders built from Hugging Face folders or from the encoder
// tensors of a ModRWKV checkpoint: tensor lookup under a prefix with shape checks, conversion to
// f32, packing for the panel GEMM, and the folder's files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/cpu/linear.h"

namespace modrwkv::encoders {

// Looks tensors up as prefix + key and checks their shapes. Errors name the full tensor name and
// the expected shape.
class TensorSource {
 public:
  TensorSource(const std::map<std::string, TensorView>& tensors, std::string prefix)
      : tensors_(tensors), prefix_(std::move(prefix)) {}

  absl::StatusOr<const TensorView*> Get(const std::string& key,
                                        const std::vector<int64_t>& shape) const;
  // The tensor converted to f32 (any dtype the checkpoint readers give).
  absl::StatusOr<std::vector<float>> Floats(const std::string& key,
                                            const std::vector<int64_t>& shape) const;
  // A Linear weight [out, in] packed for the panel GEMM.
  absl::StatusOr<cpu::Matrix> Weight(const std::string& key, int64_t out, int64_t in) const;

 private:
  const std::map<std::string, TensorView>& tensors_;
  std::string prefix_;
};

// f32 values w [out][in] (row-major) packed for the panel GEMM.
cpu::Matrix PackF32(const std::vector<float>& w, int64_t out, int64_t in);

// The whole file.
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

// <dir>/model.safetensors, else <dir>/pytorch_model.bin; NotFound naming the folder otherwise.
absl::StatusOr<std::filesystem::path> FindWeightsFile(const std::filesystem::path& dir);

// True when some tensor name starts with prefix.
bool HasPrefix(const std::map<std::string, TensorView>& tensors, const std::string& prefix);

}  // namespace modrwkv::encoders

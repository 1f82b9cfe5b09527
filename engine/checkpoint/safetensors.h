// The .safetensors format: u64 little-endian header length, a JSON header
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data; offsets are relative to the end of the header.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/tensor.h"

namespace modrwkv {

// Headers larger than this are refused (real ones are a few hundred KB).
inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t{100} << 20;

// Views point into `file`. Tensors of dtypes other than BF16/F16/F32 are an error naming them.
absl::StatusOr<std::map<std::string, TensorView>> ReadSafetensors(absl::Span<const uint8_t> file);

}  // namespace modrwkv

// Reads the state dict of a torch.save zip archive (torch >= 1.6 "new zipfile serialization"):
// <archive>/data.pkl names every tensor and points at raw storages <archive>/data/<key>.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/base/tensor.h"

namespace modrwkv {

// Returns the raw bytes of storage `key` (the data/<key> entry).
using StorageLookup =
    absl::FunctionRef<absl::StatusOr<absl::Span<const uint8_t>>(const std::string& key)>;

// Interprets a data.pkl that holds a dict or OrderedDict of name -> tensor. Values that are not
// tensors (ints, strings, nested dicts) are skipped; a tensor that cannot be represented (dtype,
// strides, layout) is an error naming it. Views point into the spans `storage` returns.
absl::StatusOr<std::map<std::string, TensorView>> ReadStateDictPickle(
    absl::Span<const uint8_t> data_pkl, StorageLookup storage);

// The whole archive: zip directory, data.pkl, storages. Views point into `archive`.
absl::StatusOr<std::map<std::string, TensorView>> ReadTorchZip(absl::Span<const uint8_t> archive);

}  // namespace modrwkv

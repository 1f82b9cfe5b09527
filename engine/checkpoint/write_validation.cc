// Validation of writer input (see write_validation.h).
#include "engine/checkpoint/write_validation.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace modrwkv {

absl::Status ValidateTensorsForWrite(const std::vector<OwnedTensor>& tensors) {
  std::set<absl::string_view> names;
  for (const OwnedTensor& t : tensors) {
    if (t.name.empty()) {
      return absl::InvalidArgumentError("tensor with an empty name");
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name ", t.name));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || (d != 0 && numel > (uint64_t{1} << 60) / static_cast<uint64_t>(d))) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", t.name, " has invalid shape ", ShapeToString(t.shape)));
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (t.bytes.size() != numel * DTypeSize(t.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", t.name, " ", std::string(DTypeName(t.dtype)), ShapeToString(t.shape), " has ",
          t.bytes.size(), " bytes, expected ", numel * DTypeSize(t.dtype)));
    }
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

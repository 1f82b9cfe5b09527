// WriteSafetensors: header JSON padded with spaces to a multiple of 8, tensors in the given order.
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/atomic_file.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/le_bytes.h"
#include "engine/checkpoint/write_validation.h"
#include "nlohmann/json.hpp"

namespace modrwkv {
namespace {

const char* SafetensorsDType(DType t) {
  switch (t) {
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF32:
      return "F32";
  }
  return "F32";
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  if (auto st = ValidateTensorsForWrite(tensors); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  }
  for (const OwnedTensor& t : tensors) {
    const nlohmann::json name(t.name);
    using EH = nlohmann::json::error_handler_t;
    if (t.name == "__metadata__" ||
        name.dump(-1, ' ', false, EH::replace) != name.dump(-1, ' ', false, EH::ignore)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", t.name, "\" is reserved or not valid UTF-8"));
    }
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const OwnedTensor& t : tensors) {
    header[t.name] = {{"dtype", SafetensorsDType(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned

  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path));
  std::string len;
  le::Append64(len, text.size());
  MODRWKV_RETURN_IF_ERROR(file->Write(len));
  MODRWKV_RETURN_IF_ERROR(file->Write(text));
  for (const OwnedTensor& t : tensors) {
    MODRWKV_RETURN_IF_ERROR(file->Write(t.bytes.data(), t.bytes.size()));
  }
  return file->Commit();
}

}  // namespace modrwkv

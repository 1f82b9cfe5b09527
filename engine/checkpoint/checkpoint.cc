// Checkpoint::Open: maps the file, detects its format from the first bytes and indexes its tensors.
#include "engine/checkpoint/checkpoint.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/mmap_file.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/checkpoint/torch_reader.h"
#include "engine/checkpoint/zip_reader.h"

namespace modrwkv {
namespace {

// Immutable after construction; the tensor views point into `file_`.
class MappedCheckpoint final : public Checkpoint {
 public:
  MappedCheckpoint(std::unique_ptr<MappedFile> file, CheckpointFormat format,
                   std::map<std::string, TensorView> tensors)
      : file_(std::move(file)), format_(format), tensors_(std::move(tensors)) {}

  CheckpointFormat format() const override { return format_; }
  const std::map<std::string, TensorView>& tensors() const override { return tensors_; }

 private:
  std::unique_ptr<MappedFile> file_;
  CheckpointFormat format_;
  std::map<std::string, TensorView> tensors_;
};

bool StartsWith(absl::Span<const uint8_t> b, absl::string_view prefix) {
  return b.size() >= prefix.size() && std::memcmp(b.data(), prefix.data(), prefix.size()) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path,
                                                             const CheckpointOptions& options) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(), absl::StrCat("checkpoint ", file.status().message()));
  }
  const absl::Span<const uint8_t> bytes = (*file)->bytes();
  auto fail = [&](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat("checkpoint ", path, ": ", st.message()));
  };

  CheckpointFormat format;
  absl::StatusOr<std::map<std::string, TensorView>> tensors;
  if (StartsWith(bytes, absl::string_view("PK\x03\x04", 4))) {
    format = CheckpointFormat::kTorchZip;
    if (options.verify_checksums) {
      auto entries = ReadZipDirectory(bytes);
      absl::Status st = entries.ok() ? VerifyZipChecksums(bytes, *entries) : entries.status();
      if (!st.ok()) {
        return fail(st);
      }
    }
    tensors = ReadTorchZip(bytes);
  } else if (StartsWith(bytes, absl::string_view("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20", 10))) {
    return fail(absl::UnimplementedError(
        "legacy (pre-1.6, non-zip) torch.save format; re-save it with a current torch"));
  } else if (bytes.size() >= 9 && bytes[8] == '{') {
    format = CheckpointFormat::kSafetensors;
    tensors = ReadSafetensors(bytes);
  } else {
    return fail(absl::InvalidArgumentError(
        "unrecognized format: neither a torch.save zip (PK\\x03\\x04) nor safetensors "
        "(u64 header length, then '{')"));
  }
  if (!tensors.ok()) {
    return fail(tensors.status());
  }
  return std::unique_ptr<Checkpoint>(
      new MappedCheckpoint(std::move(*file), format, std::move(*tensors)));
}

}  // namespace modrwkv

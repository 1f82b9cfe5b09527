// Writes a file under a temporary name and renames it into place on Commit(), so readers never see
// a half-written checkpoint. An uncommitted file is removed when the writer is destroyed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace modrwkv {

class AtomicFile {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFile>> Create(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  absl::Status Write(const void* data, size_t n);
  absl::Status Write(absl::string_view s) { return Write(s.data(), s.size()); }
  uint64_t offset() const { return offset_; }

  // Flushes, fsyncs and renames the temporary file to the final path.
  absl::Status Commit();

 private:
  AtomicFile(std::string path, std::string tmp, std::FILE* f)
      : path_(std::move(path)), tmp_(std::move(tmp)), f_(f) {}

  std::string path_;
  std::string tmp_;
  std::FILE* f_;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

}  // namespace modrwkv

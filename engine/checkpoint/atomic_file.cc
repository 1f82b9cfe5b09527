// Temp-file-then-rename writer.
#include "engine/checkpoint/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace modrwkv {

absl::StatusOr<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path) {
  // Same directory as the target, so the rename cannot cross file systems; unique per process and
  // per call, so concurrent writers of one path do not share a temporary file.
  static std::atomic<uint64_t> counter{0};
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create ", tmp, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<AtomicFile>(new AtomicFile(path, std::move(tmp), f));
}

AtomicFile::~AtomicFile() {
  if (f_ != nullptr) {
    std::fclose(f_);
  }
  if (!committed_) {
    std::remove(tmp_.c_str());
  }
}

absl::Status AtomicFile::Write(const void* data, size_t n) {
  if (f_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": already closed"));
  }
  if (n > 0 && std::fwrite(data, 1, n, f_) != n) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path_, ": write failed after ", offset_, " bytes: ", std::strerror(errno)));
  }
  offset_ += n;
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (f_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": already closed"));
  }
  const bool flushed = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!flushed || !closed) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path_, ": flushing ", tmp_, " failed: ", std::strerror(err)));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(path_, ": rename from ", tmp_, " failed: ", std::strerror(errno)));
  }
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace modrwkv

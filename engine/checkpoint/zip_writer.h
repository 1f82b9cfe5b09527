// Writes a zip archive of stored (uncompressed) entries, the layout torch.save produces: tensor
// data aligned to 64 bytes via a padding extra field, ZIP64 records so entries may exceed 4 GiB.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/checkpoint/atomic_file.h"
#include "engine/checkpoint/crc32.h"

namespace modrwkv {

// Not thread-safe. `out` must outlive the writer; call Finish() once after the last entry.
class ZipWriter {
 public:
  explicit ZipWriter(AtomicFile* out) : out_(out) {}

  absl::Status AddStored(const std::string& name, absl::Span<const uint8_t> data);
  absl::Status AddStored(const std::string& name, absl::string_view data) {
    return AddStored(name, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                                     data.size()));
  }
  // Central directory, ZIP64 end-of-directory record and locator, end-of-directory record.
  absl::Status Finish();

  static constexpr uint64_t kAlignment = 64;

 private:
  struct Entry {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };
  AtomicFile* out_;
  std::vector<Entry> entries_;
};

}  // namespace modrwkv

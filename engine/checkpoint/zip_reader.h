// Reads the central directory of a zip archive held in memory (a memory-mapped torch.save file).
// Only locates entries; it never decompresses. Every offset and size is checked against the buffer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace modrwkv {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;       // 0 = stored; anything else is compressed
  uint16_t flags = 0;        // general purpose bit flags (bit 0: encrypted)
  uint64_t data_offset = 0;  // start of the entry's bytes within the archive
  uint64_t size = 0;         // compressed size (== uncompressed size for stored entries)
  uint64_t uncompressed_size = 0;
  uint32_t crc32 = 0;
};

// Parses the end-of-central-directory record (ZIP64 aware), the central directory and each
// entry's local header, which must agree with the central directory on the name, flags, method,
// CRC-32 and sizes (or, with bit 3, the data descriptor must). Errors are DATA_LOSS naming the
// entry and the field. Guarantees data_offset + size <= archive.size() for every entry.
absl::StatusOr<std::vector<ZipEntry>> ReadZipDirectory(absl::Span<const uint8_t> archive);

// The bytes of a stored (uncompressed, unencrypted) entry; an error naming the entry otherwise.
absl::StatusOr<absl::Span<const uint8_t>> StoredEntryBytes(absl::Span<const uint8_t> archive,
                                                           const ZipEntry& entry);

// Checks a stored entry's bytes against the CRC-32 the central directory records for it. DATA_LOSS
// naming the entry, the expected and the actual CRC on a mismatch.
absl::Status VerifyCrc32(absl::Span<const uint8_t> archive, const ZipEntry& entry);

// VerifyCrc32 on every stored, unencrypted entry (others cannot be checked without inflating them;
// StoredEntryBytes refuses them when they are used).
absl::Status VerifyZipChecksums(absl::Span<const uint8_t> archive,
                                const std::vector<ZipEntry>& entries);

}  // namespace modrwkv

// CRC-32 (ISO-HDLC, the zip and gzip checksum), computed by zlib's crc32_z (braided, ~6 GB/s on
// one core), so that checking a whole checkpoint costs little next to loading it.
#pragma once

#include <cstdint>

#include "absl/types/span.h"

namespace modrwkv {

// `crc` continues a running checksum (0 to start).
uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc = 0);

}  // namespace modrwkv

// CRC-32 (ISO-HDLC, the zip and gzip checksum), fast enough that checking a whole checkpoint
// costs little next to loading it.
#pragma once

#include <cstdint>

#include "absl/types/span.h"

namespace modrwkv {

// `crc` continues a running checksum (0 to start).
// PCLMULQDQ folding where the CPU has it (~20 GB/s on one core), else zlib (~6 GB/s).
uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc = 0);

// zlib's crc32_z alone: the reference the tests compare Crc32 with.
uint32_t Crc32Zlib(absl::Span<const uint8_t> data, uint32_t crc = 0);

}  // namespace modrwkv

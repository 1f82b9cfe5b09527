// Crc32 on zlib (Debian's zlib1g-dev).
#include "engine/checkpoint/crc32.h"

#include <zlib.h>

namespace modrwkv {

uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc) {
  return static_cast<uint32_t>(crc32_z(crc, data.data(), data.size()));
}

}  // namespace modrwkv

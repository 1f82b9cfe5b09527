// Little-endian integer loads and stores for the binary formats (zip, pickle, safetensors).
// Callers check bounds first; these never read past the pointer + width.
#pragma once

#include <cstdint>
#include <string>

namespace modrwkv::le {

inline uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t Load64(const uint8_t* p) {
  return static_cast<uint64_t>(Load32(p)) | (static_cast<uint64_t>(Load32(p + 4)) << 32);
}

inline void Append16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
inline void Append32(std::string& out, uint32_t v) {
  Append16(out, static_cast<uint16_t>(v & 0xffff));
  Append16(out, static_cast<uint16_t>(v >> 16));
}
inline void Append64(std::string& out, uint64_t v) {
  Append32(out, static_cast<uint32_t>(v & 0xffffffffu));
  Append32(out, static_cast<uint32_t>(v >> 32));
}

}  // namespace modrwkv::le

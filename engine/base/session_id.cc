#include "engine/base/session_id.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv {

SessionId SessionId::Random(std::optional<uint32_t> routing_hint) {
  thread_local std::random_device rd;  // getrandom(2) on Linux
  auto u64 = [] { return (static_cast<uint64_t>(rd()) << 32) | rd(); };
  SessionId id{u64(), u64()};
  if (routing_hint) id.hi = (static_cast<uint64_t>(*routing_hint) << 32) | (id.hi & 0xffffffffu);
  return id;
}

absl::StatusOr<SessionId> SessionId::Parse(std::string_view hex) {
  if (hex.size() != 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id must be 32 hex digits, got ", hex.size(), " characters"));
  }
  uint64_t parts[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    const char c = hex[i];
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      return absl::InvalidArgumentError("session_id must be 32 hex digits");
    }
    parts[i / 16] = (parts[i / 16] << 4) | static_cast<uint64_t>(v);
  }
  return SessionId{parts[0], parts[1]};
}

std::string SessionId::ToString() const { return absl::StrFormat("%016x%016x", hi, lo); }

}  // namespace modrwkv

// 128-bit random session identifiers, printed as 32 lowercase hex digits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/hash/hash.h"
#include "absl/status/statusor.h"

namespace modrwkv {

struct SessionId {
  uint64_t hi = 0, lo = 0;

  // From the OS's entropy source; unguessable, so an id alone does not let a caller reach
  // another caller's session (ids are also bound to their owner when auth is on).
  static SessionId Random();
  // Parses 32 hex digits (either case); INVALID_ARGUMENT otherwise.
  static absl::StatusOr<SessionId> Parse(std::string_view hex);
  std::string ToString() const;

  friend bool operator==(const SessionId& a, const SessionId& b) {
    return a.hi == b.hi && a.lo == b.lo;
  }
  friend bool operator!=(const SessionId& a, const SessionId& b) { return !(a == b); }
  template <typename H>
  friend H AbslHashValue(H h, const SessionId& s) {
    return H::combine(std::move(h), s.hi, s.lo);
  }
};

}  // namespace modrwkv

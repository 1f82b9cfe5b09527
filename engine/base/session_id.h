// 128-bit session identifiers, printed as 32 lowercase hex digits. A serving replica starts the
// ids it makes with its routing hint (the first 8 hex digits, 32 bits), so that a client can send
// every call on a session to the replica that holds it (docs/operations.md, "Sessions across
// replicas"); the other 96 bits are random.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/hash/hash.h"
#include "absl/status/statusor.h"

namespace modrwkv {

struct SessionId {
  uint64_t hi = 0, lo = 0;

  // From the OS's entropy source; unguessable, so an id alone does not let a caller reach
  // another caller's session (ids are also bound to their owner when auth is on).
  // With a routing hint the id starts with it and 96 bits are random; without, all 128 are.
  static SessionId Random(std::optional<uint32_t> routing_hint = std::nullopt);
  // Parses 32 hex digits (either case); INVALID_ARGUMENT otherwise.
  static absl::StatusOr<SessionId> Parse(std::string_view hex);
  std::string ToString() const;
  // The first 32 bits: the routing hint of the replica that made the id (if it set one).
  uint32_t routing_hint() const { return static_cast<uint32_t>(hi >> 32); }

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

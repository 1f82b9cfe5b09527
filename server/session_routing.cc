#include "server/session_routing.h"

#include <openssl/sha.h>

#include "absl/strings/str_cat.h"

namespace modrwkv::server {

int PickReplica(const SessionId& session, absl::Span<const Replica> replicas) {
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i].routing_hint == session.routing_hint()) return static_cast<int>(i);
  }
  int best = -1;
  uint64_t best_weight = 0;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (!replicas[i].routing_hint) continue;
    const uint64_t w = RendezvousWeight(session, replicas[i].target);
    // Ties (a 2^-64 chance) go to the smaller address, so that the order of the list is moot.
    if (best < 0 || w > best_weight ||
        (w == best_weight && replicas[i].target < replicas[best].target)) {
      best = static_cast<int>(i);
      best_weight = w;
    }
  }
  return best;
}

uint64_t RendezvousWeight(const SessionId& session, absl::string_view target) {
  const std::string key = absl::StrCat(session.ToString(), "@", target);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = (w << 8) | digest[i];
  return w;
}

absl::StatusOr<uint32_t> ParseRoutingHint(absl::string_view hex) {
  // A session id is 32 hex digits; the hint is its first 8.
  if (hex.size() == 8) {
    absl::StatusOr<SessionId> id = SessionId::Parse(absl::StrCat(hex, std::string(24, '0')));
    if (id.ok()) return id->routing_hint();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("session_routing_hint must be 8 hex digits, got \"", hex, "\""));
}

}  // namespace modrwkv::server

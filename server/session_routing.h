// The client side of sessions across replicas: which replica a call on a session goes to.
//
// Each replica draws a 32-bit routing hint at start-up and begins every session id it makes with
// it (GetModelInfo.session_routing_hint, 8 hex digits). A client that knows the replicas (the
// headless Service's addresses) asks each for its hint and sends a session's calls to the replica
// whose hint starts the id: the one that holds the session in memory. When that replica is gone
// (drained: the session is in the shared tier), every client falls back to the same live replica,
// chosen by rendezvous hashing of the id over the live replicas' addresses; that replica resumes
// the session from the shared tier and keeps it, so later calls find it there. Used by
// `modrwkv client --target a,b,...`; docs/operations.md describes it for other clients.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/base/session_id.h"

namespace modrwkv::server {

struct Replica {
  std::string target;                    // host:port, as every client of the deployment names it
  std::optional<uint32_t> routing_hint;  // nullopt: it did not answer (gone or not ready)
};

// The index in `replicas` of the replica for calls on `session`: the live one announcing the id's
// hint, else the live one with the highest rendezvous weight (RendezvousWeight). -1 when none is
// live.
int PickReplica(const SessionId& session, absl::Span<const Replica> replicas);

// The first 8 bytes, big-endian, of SHA-256(<32 hex digits of the id> "@" <target>): the same in
// every language, so clients written separately agree on the fallback.
uint64_t RendezvousWeight(const SessionId& session, absl::string_view target);

// 8 hex digits (GetModelInfo.session_routing_hint); INVALID_ARGUMENT otherwise.
absl::StatusOr<uint32_t> ParseRoutingHint(absl::string_view hex);

}  // namespace modrwkv::server

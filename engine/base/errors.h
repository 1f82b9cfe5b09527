// Machine-readable detail on the engine's errors, carried as absl::Status payloads: a reason
// (an UPPER_SNAKE_CASE word, stable API: clients branch on it) and, for INVALID_ARGUMENT, the
// offending field. The server turns them into google.rpc.ErrorInfo and BadRequest details without
// parsing messages; the engine itself knows nothing of gRPC.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modrwkv {

// Reasons the engine attaches (the server adds its own, e.g. LOADING, UNAUTHENTICATED).
namespace reason {
inline constexpr absl::string_view kQueueFull = "QUEUE_FULL";
inline constexpr absl::string_view kQueuedTokensFull = "QUEUED_TOKENS_FULL";
inline constexpr absl::string_view kDraining = "DRAINING";
inline constexpr absl::string_view kNoFreeSlot = "NO_FREE_SLOT";
inline constexpr absl::string_view kSessionNotFound = "SESSION_NOT_FOUND";
inline constexpr absl::string_view kSessionBusy = "SESSION_BUSY";
inline constexpr absl::string_view kStateModelMismatch = "STATE_MODEL_MISMATCH";
inline constexpr absl::string_view kSessionQuota = "SESSION_QUOTA";
inline constexpr absl::string_view kSessionTierFull = "SESSION_TIER_FULL";
inline constexpr absl::string_view kSessionLost = "SESSION_LOST";
inline constexpr absl::string_view kInternal = "INTERNAL";
inline constexpr absl::string_view kEngineFailed = "ENGINE_FAILED";
}  // namespace reason

// Returns `s` with the reason / field attached (no-op on OK).
absl::Status WithReason(absl::Status s, absl::string_view reason);
absl::Status WithField(absl::Status s, absl::string_view field);
// INVALID_ARGUMENT naming `field` (an engine-side name such as "top_p" or "banned_tokens[3]").
absl::Status InvalidFieldError(absl::string_view field, absl::string_view message);

// The attached reason / field, or "" if none.
std::string ReasonOf(const absl::Status& s);
std::string FieldOf(const absl::Status& s);

}  // namespace modrwkv

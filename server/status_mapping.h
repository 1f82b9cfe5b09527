// The one place where errors leave the process: absl::Status -> grpc::Status with a packed
// google.rpc.Status (ErrorInfo, RetryInfo, BadRequest) in the grpc-status-details-bin trailer.
// Server code annotates an absl::Status with the facts a client needs (the offending field, a
// machine-readable reason, a retry delay) as payloads; ToGrpcStatus turns them into details.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/base/errors.h"
#include "grpcpp/support/status.h"

namespace modrwkv::server {

inline constexpr absl::string_view kErrorDomain = "modrwkv";

// INVALID_ARGUMENT whose BadRequest field violation names `field` (a path in the request message,
// e.g. "sampling.top_p"). The message should name the field too.
absl::Status InvalidField(absl::string_view field, absl::string_view message);

// Returns `s` with a RetryInfo delay (reasons and fields: WithReason / WithField from
// engine/base/errors.h). No-op on an OK status.
absl::Status WithRetryDelay(absl::Status s, absl::Duration delay);

// The retry delay a client is told for `s` (RESOURCE_EXHAUSTED, UNAVAILABLE): WithRetryDelay's,
// else 1 s.
absl::Duration RetryDelayOf(const absl::Status& s);

// The ErrorInfo reason ToGrpcStatus sends for `s`: its reason payload, else the code's name.
std::string ErrorInfoReason(const absl::Status& s);

// The mapping. OK stays OK; every error gets ErrorInfo{reason, domain "modrwkv"};
// RESOURCE_EXHAUSTED and UNAVAILABLE get RetryInfo (1 s unless annotated); INVALID_ARGUMENT with a
// field gets BadRequest.
grpc::Status ToGrpcStatus(const absl::Status& s);

// Rewrites an engine validation error (SamplerConfig/StopConditions::Validate attach the engine's
// field name, e.g. "top_p" for "top_p must be in (0, 1], got 2") so that message and BadRequest
// name the field of the request message ("sampling.top_p"). Other statuses pass.
absl::Status RenameEngineField(const absl::Status& s);

}  // namespace modrwkv::server

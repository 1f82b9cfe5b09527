#include "server/status_mapping.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace modrwkv::server {
namespace {

// Payload type URLs (private to this file: only ToGrpcStatus reads them).
constexpr char kReasonUrl[] = "type.modrwkv.dev/reason";
constexpr char kFieldUrl[] = "type.modrwkv.dev/field";
constexpr char kRetryUrl[] = "type.modrwkv.dev/retry_ms";

constexpr absl::Duration kDefaultRetryDelay = absl::Seconds(1);

std::string Payload(const absl::Status& s, const char* url) {
  absl::optional<absl::Cord> c = s.GetPayload(url);
  return c ? std::string(*c) : std::string();
}

std::string CodeName(absl::StatusCode code) {
  // absl's names are "INVALID_ARGUMENT" etc. for every code.
  return absl::StatusCodeToString(code);
}

// Engine field name (the first word of a Validate message, before any "[index]") -> path in the
// request message.
absl::string_view ProtoPathOf(absl::string_view engine_field) {
  static constexpr std::pair<absl::string_view, absl::string_view> kPaths[] = {
      {"temperature", "sampling.temperature"},
      {"top_k", "sampling.top_k"},
      {"top_p", "sampling.top_p"},
      {"min_p", "sampling.min_p"},
      {"repetition_penalty", "sampling.repetition_penalty"},
      {"presence_penalty", "sampling.presence_penalty"},
      {"frequency_penalty", "sampling.frequency_penalty"},
      {"penalty_decay", "sampling.penalty_decay"},
      {"logit_bias", "sampling.logit_bias"},
      {"banned_tokens", "sampling.banned_token_ids"},
      {"logprobs_top_n", "logprobs_top_n"},
      {"max_tokens", "stop.max_tokens"},
      {"stop_token_ids", "stop.stop_token_ids"},
      {"stop_strings", "stop.stop_strings"},
  };
  for (const auto& [from, to] : kPaths) {
    if (from == engine_field) return to;
  }
  return {};
}

}  // namespace

absl::Status WithReason(absl::Status s, absl::string_view reason) {
  if (!s.ok()) s.SetPayload(kReasonUrl, absl::Cord(reason));
  return s;
}

absl::Status WithField(absl::Status s, absl::string_view field) {
  if (!s.ok()) s.SetPayload(kFieldUrl, absl::Cord(field));
  return s;
}

absl::Status WithRetryDelay(absl::Status s, absl::Duration delay) {
  if (!s.ok()) {
    s.SetPayload(kRetryUrl, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(delay))));
  }
  return s;
}

absl::Status InvalidField(absl::string_view field, absl::string_view message) {
  return WithField(absl::InvalidArgumentError(message), field);
}

std::string ReasonOf(const absl::Status& s) {
  if (s.ok()) return "";
  std::string reason = Payload(s, kReasonUrl);
  if (!reason.empty()) return reason;
  // Errors that come from the scheduler carry no payload (engine/ knows nothing of our error
  // model); their messages are stable and documented in engine/scheduler.cc.
  const absl::string_view m = s.message();
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
      if (absl::StrContains(m, "queue is full")) return "QUEUE_FULL";
      if (absl::StrContains(m, "prompt tokens queued")) return "QUEUED_TOKENS_FULL";
      break;
    case absl::StatusCode::kUnavailable:
      if (absl::StrContains(m, "draining")) return "DRAINING";
      break;
    case absl::StatusCode::kNotFound:
      if (absl::StartsWith(m, "session_id")) return "SESSION_NOT_FOUND";
      break;
    case absl::StatusCode::kFailedPrecondition:
      if (absl::StrContains(m, "in use")) return "SESSION_BUSY";
      if (absl::StrContains(m, "fingerprint") || absl::StrContains(m, "model")) {
        return "STATE_MODEL_MISMATCH";
      }
      break;
    default:
      break;
  }
  return CodeName(s.code());
}

absl::Status RenameEngineField(const absl::Status& s) {
  if (s.code() != absl::StatusCode::kInvalidArgument) return s;
  const absl::string_view m = s.message();
  const size_t end = m.find_first_of(" [");
  const absl::string_view name = m.substr(0, end);
  const absl::string_view path = ProtoPathOf(name);
  if (path.empty()) return s;
  const absl::string_view rest = end == absl::string_view::npos ? "" : m.substr(end);
  // Keep an index that follows the name: "banned_tokens[3] = ..." ->
  // "sampling.banned_token_ids[3]".
  std::string field(path);
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close != absl::string_view::npos) absl::StrAppend(&field, rest.substr(0, close + 1));
  }
  return InvalidField(field, absl::StrCat(path, rest));
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(s.code()));
  rpc.set_message(std::string(s.message()));

  google::rpc::ErrorInfo info;
  info.set_reason(ReasonOf(s));
  info.set_domain(std::string(kErrorDomain));
  rpc.add_details()->PackFrom(info);

  if (s.code() == absl::StatusCode::kResourceExhausted ||
      s.code() == absl::StatusCode::kUnavailable) {
    absl::Duration delay = kDefaultRetryDelay;
    int64_t ms;
    if (absl::SimpleAtoi(Payload(s, kRetryUrl), &ms) && ms >= 0) delay = absl::Milliseconds(ms);
    google::rpc::RetryInfo retry;
    retry.mutable_retry_delay()->set_seconds(absl::ToInt64Seconds(delay));
    retry.mutable_retry_delay()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(delay % absl::Seconds(1))));
    rpc.add_details()->PackFrom(retry);
  }

  const std::string field = Payload(s, kFieldUrl);
  if (s.code() == absl::StatusCode::kInvalidArgument && !field.empty()) {
    google::rpc::BadRequest bad;
    auto* v = bad.add_field_violations();
    v->set_field(field);
    v->set_description(std::string(s.message()));
    rpc.add_details()->PackFrom(bad);
  }
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()),
                      rpc.SerializeAsString());
}

}  // namespace modrwkv::server

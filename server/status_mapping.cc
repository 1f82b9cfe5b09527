#include "server/status_mapping.h"

#include <algorithm>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"
#include "engine/base/errors.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace modrwkv::server {
namespace {

// The retry delay payload (reasons and fields are engine/base/errors.h payloads).
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

absl::Status WithRetryDelay(absl::Status s, absl::Duration delay) {
  if (!s.ok()) {
    s.SetPayload(kRetryUrl, absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(delay))));
  }
  return s;
}

absl::Status InvalidField(absl::string_view field, absl::string_view message) {
  return WithField(absl::InvalidArgumentError(message), field);
}

std::string ErrorInfoReason(const absl::Status& s) {
  if (s.ok()) return "";
  std::string reason = ReasonOf(s);
  return reason.empty() ? CodeName(s.code()) : reason;
}

absl::Status RenameEngineField(const absl::Status& s) {
  const std::string field = FieldOf(s);
  if (s.code() != absl::StatusCode::kInvalidArgument || field.empty()) return s;
  // "banned_tokens[3]" -> "sampling.banned_token_ids[3]": map the name, keep the index.
  const size_t name_end = std::min(field.find('['), field.size());
  const absl::string_view name = absl::string_view(field).substr(0, name_end);
  const absl::string_view path = ProtoPathOf(name);
  if (path.empty()) return s;
  const std::string proto_field = absl::StrCat(path, field.substr(name_end));
  // Messages start with the engine's name for the field; show the request's.
  std::string message(s.message());
  if (absl::StartsWith(message, name)) message = absl::StrCat(path, message.substr(name.size()));
  absl::Status out = InvalidField(proto_field, message);
  const std::string reason = ReasonOf(s);
  return reason.empty() ? out : WithReason(out, reason);
}

absl::Duration RetryDelayOf(const absl::Status& s) {
  int64_t ms;
  if (absl::SimpleAtoi(Payload(s, kRetryUrl), &ms) && ms >= 0) return absl::Milliseconds(ms);
  return kDefaultRetryDelay;
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(s.code()));
  rpc.set_message(std::string(s.message()));

  google::rpc::ErrorInfo info;
  info.set_reason(ErrorInfoReason(s));
  info.set_domain(std::string(kErrorDomain));
  rpc.add_details()->PackFrom(info);

  if (s.code() == absl::StatusCode::kResourceExhausted ||
      s.code() == absl::StatusCode::kUnavailable) {
    const absl::Duration delay = RetryDelayOf(s);
    google::rpc::RetryInfo retry;
    retry.mutable_retry_delay()->set_seconds(absl::ToInt64Seconds(delay));
    retry.mutable_retry_delay()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(delay % absl::Seconds(1))));
    rpc.add_details()->PackFrom(retry);
  }

  const std::string field = FieldOf(s);
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

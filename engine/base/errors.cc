#include "engine/base/errors.h"

#include "absl/strings/cord.h"
#include "absl/types/optional.h"

namespace modrwkv {
namespace {

constexpr char kReasonUrl[] = "type.modrwkv.dev/reason";
constexpr char kFieldUrl[] = "type.modrwkv.dev/field";

std::string Payload(const absl::Status& s, const char* url) {
  absl::optional<absl::Cord> c = s.GetPayload(url);
  return c ? std::string(*c) : std::string();
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

absl::Status InvalidFieldError(absl::string_view field, absl::string_view message) {
  return WithField(absl::InvalidArgumentError(message), field);
}

std::string ReasonOf(const absl::Status& s) { return s.ok() ? "" : Payload(s, kReasonUrl); }
std::string FieldOf(const absl::Status& s) { return s.ok() ? "" : Payload(s, kFieldUrl); }

}  // namespace modrwkv

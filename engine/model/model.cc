#include "engine/model/model.h"

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv {

namespace {
constexpr absl::string_view kStepEntryPayload = "modrwkv.step_entry";
}  // namespace

absl::Status WithStepEntry(absl::Status s, int entry) {
  if (!s.ok()) s.SetPayload(kStepEntryPayload, absl::Cord(absl::StrCat(entry)));
  return s;
}

std::optional<int> StepEntryOf(const absl::Status& s) {
  const auto p = s.GetPayload(kStepEntryPayload);
  int entry = 0;
  if (!p || !absl::SimpleAtoi(std::string(*p), &entry)) return std::nullopt;
  return entry;
}

absl::Status ModelOptions::Validate() const {
  if (num_slots < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("num_slots must be >= 1, got %d", num_slots));
  }
  if (state_memory_bytes < 0) {
    return absl::InvalidArgumentError("state_memory_bytes must be >= 0");
  }
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("threads must be >= 0, got %d", threads));
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

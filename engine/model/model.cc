#include "engine/model/model.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

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

int64_t EntryRows(const StepEntry& entry, int n_embd) {
  int64_t rows = 0;
  for (const InputRowsView& seg : entry.inputs) {
    rows += static_cast<int64_t>(seg.tokens.size() + seg.embeddings.size() / n_embd);
  }
  return rows;
}

namespace {

absl::Status ValidateEntry(const StepEntry& entry, int e, const ModelConfig& cfg, int num_slots,
                           std::vector<bool>* used_slots, int64_t* rows) {
  std::vector<bool>& used = *used_slots;
  MODRWKV_RETURN_IF_ERROR(CheckSlotIndex(entry.slot, num_slots, "step entry"));
  if (used[entry.slot]) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slot %d appears twice in one step", entry.slot));
  }
  used[entry.slot] = true;
  for (const InputRowsView& seg : entry.inputs) {
    if (!seg.tokens.empty() && !seg.embeddings.empty()) {
      return absl::InvalidArgumentError("an input segment has both tokens and embeddings");
    }
    for (int32_t t : seg.tokens) {
      if (t < 0 || t >= cfg.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("token id %d out of range [0, %d)", t, cfg.vocab_size));
      }
    }
    if (seg.embeddings.size() % cfg.n_embd != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("embedding segment has %d floats, not a multiple of n_embd %d",
                          seg.embeddings.size(), cfg.n_embd));
    }
  }
  const int64_t entry_rows = EntryRows(entry, cfg.n_embd);
  if (entry_rows == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("step entry %d has no input rows", e));
  }
  if (entry.output == StepOutput::kSample && entry.sampler == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("step entry %d asks for sampling without a sampler", e));
  }
  *rows += entry_rows;
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateStepEntries(absl::Span<const StepEntry> entries, const ModelConfig& config,
                                 int num_slots, int* total_rows) {
  std::vector<bool> used(num_slots, false);
  int64_t rows = 0;
  for (size_t e = 0; e < entries.size(); ++e) {
    const absl::Status st =
        ValidateEntry(entries[e], static_cast<int>(e), config, num_slots, &used, &rows);
    if (!st.ok()) return WithStepEntry(st, static_cast<int>(e));
  }
  if (rows > (1 << 20)) return absl::InvalidArgumentError("step has more than 2^20 rows");
  *total_rows = static_cast<int>(rows);
  return absl::OkStatus();
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
  return CudaDevice().status();
}

absl::StatusOr<int> ModelOptions::SlotsFor(int64_t state_bytes) const {
  if (state_memory_bytes <= 0) return num_slots;
  const int64_t fit = state_memory_bytes / state_bytes;
  if (fit < num_slots) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "state memory budget of %d bytes holds %d states of %d bytes; need at least %d",
        state_memory_bytes, fit, state_bytes, num_slots));
  }
  return static_cast<int>(std::min<int64_t>(fit, 1 << 20));
}

absl::Status HostColdState::Read(absl::Span<float> out) const {
  if (out.size() != state_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cold state has %d floats, the buffer %d", state_.size(), out.size()));
  }
  std::copy(state_.begin(), state_.end(), out.begin());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ColdState>> Model::OffloadSlot(int slot) {
  std::vector<float> state(config().StateFloats());
  MODRWKV_RETURN_IF_ERROR(ReadSlot(slot, absl::MakeSpan(state)));
  return std::make_unique<HostColdState>(std::move(state));
}

absl::Status Model::RestoreSlot(int slot, ColdState& cold) {
  if (const auto* host = dynamic_cast<const HostColdState*>(&cold)) {
    return WriteSlot(slot, host->floats());
  }
  std::vector<float> state(config().StateFloats());
  MODRWKV_RETURN_IF_ERROR(cold.Read(absl::MakeSpan(state)));
  return WriteSlot(slot, state);
}

absl::Status CheckStateBuffer(size_t size, const ModelConfig& config) {
  if (static_cast<int64_t>(size) != config.StateFloats()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("state buffer has %d floats, expected %d", size, config.StateFloats()));
  }
  return absl::OkStatus();
}

absl::Status CheckSlotIndex(int slot, int num_slots, const char* what) {
  if (slot < 0 || slot >= num_slots) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s slot %d out of range [0, %d)", what, slot, num_slots));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ModelOptions::CudaDevice() const {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  int n = -1;
  if (absl::StartsWith(device, "cuda:") && absl::SimpleAtoi(device.substr(5), &n) && n >= 0 &&
      n < 1024) {
    return n;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device must be cpu, cuda or cuda:N, got \"", device, "\""));
}

}  // namespace modrwkv

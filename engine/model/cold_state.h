// A sequence's state held in host memory (the state pool's cold tier, a turn's starting state).
// The backend that made one (Model::OffloadSlot) keeps it in its own element type and memory — on
// a GPU pinned host memory in the state pool's type, filled by a copy that may still be in flight;
// a state decoded from a blob is a HostColdState. Either goes back into any slot of any backend
// (Model::RestoreSlot).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace modrwkv {

class ColdState {
 public:
  virtual ~ColdState() = default;
  // The state in the canonical f32 layout (Model::ReadSlot's), `out` of StateFloats() floats;
  // waits for a copy still in flight. An error when that copy failed.
  virtual absl::Status Read(absl::Span<float> out) const = 0;
  // Host memory held, in bytes.
  virtual int64_t bytes() const = 0;
};

// The canonical f32 layout in a plain vector.
class HostColdState final : public ColdState {
 public:
  explicit HostColdState(std::vector<float> state) : state_(std::move(state)) {}
  absl::Status Read(absl::Span<float> out) const override;
  int64_t bytes() const override { return static_cast<int64_t>(state_.size() * sizeof(float)); }
  absl::Span<const float> floats() const { return state_; }

 private:
  std::vector<float> state_;
};

}  // namespace modrwkv

// The CUDA backend's cold tier: a slot's state offloaded to pinned host memory, in the state
// pool's own element type (f16 states stay f16: half the host memory), by a copy queued on the
// model's stream behind the slot's earlier work. Nothing waits for it: the slot is reused by
// later work on the same stream, which runs after the copy; the host waits only when it reads
// the state (ColdState::Read: export, spill, fork of a cold session). A restore is the reverse
// copy, queued the same way. Pinned memory makes both copies run at the bus's speed and lets
// them stay asynchronous (a copy to pageable memory is staged by the driver and makes the
// calling thread wait).
//
// Buffers are cached: a ColdState dropped (its session restored or deleted) gives its buffer
// back with the event after its last copy, and the next offload reuses it (pinning fresh pages
// costs milliseconds); beyond a few spares they are freed, after that event.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/device_buffer.h"
#include "engine/model/cold_state.h"

namespace modrwkv::cuda {

class PinnedStates {
 public:
  // Buffers of `floats` state elements of `elem_bytes` each (4: f32, 2: f16) for the model on
  // `device`, at most `max_spare` kept when not in use.
  PinnedStates(int64_t floats, int elem_bytes, int device, int max_spare = 4);
  ~PinnedStates();
  PinnedStates(const PinnedStates&) = delete;
  PinnedStates& operator=(const PinnedStates&) = delete;

  struct Buffer {
    void* data = nullptr;
    CudaEvent last_copy;  // recorded after each copy into or out of `data`
  };
  // A spare buffer, or a new one (cudaMallocHost; RESOURCE_EXHAUSTED when pinning fails).
  absl::StatusOr<Buffer> Take();
  // Back to the spares, or freed once its last copy is done.
  void Give(Buffer b);

  int64_t floats() const { return floats_; }
  int elem_bytes() const { return elem_bytes_; }
  int64_t bytes() const { return floats_ * elem_bytes_; }
  // Makes the model's device current on the calling thread: a ColdState may be read or dropped
  // on a thread that has not used CUDA, where the runtime would otherwise set up device 0.
  void UseDevice() const;

 private:
  void Free(Buffer& b) const;

  const int64_t floats_;
  const int elem_bytes_;
  const int device_;
  const size_t max_spare_;
  std::mutex mu_;  // a ColdState may be dropped on another thread than the scheduler's
  std::vector<Buffer> spare_;
};

// One offloaded state: a pinned buffer of its PinnedStates, and the event after the last copy
// into or out of it.
class PinnedColdState final : public ColdState {
 public:
  PinnedColdState(std::shared_ptr<PinnedStates> owner, PinnedStates::Buffer buffer)
      : owner_(std::move(owner)), buf_(std::move(buffer)) {}
  ~PinnedColdState() override { owner_->Give(std::move(buf_)); }

  // Waits for the last copy, then converts f16 elements to f32 (or copies f32 ones).
  absl::Status Read(absl::Span<float> out) const override;
  int64_t bytes() const override { return owner_->bytes(); }

  const PinnedStates* owner() const { return owner_.get(); }
  void* data() const { return buf_.data; }
  cudaEvent_t last_copy() const { return buf_.last_copy.get(); }

 private:
  std::shared_ptr<PinnedStates> owner_;
  PinnedStates::Buffer buf_;
};

}  // namespace modrwkv::cuda

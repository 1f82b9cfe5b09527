#include "engine/cuda/pinned_states.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/base/tensor.h"
#include "engine/cuda/cuda_check.h"

namespace modrwkv::cuda {

PinnedStates::PinnedStates(int64_t floats, int elem_bytes, int device, int max_spare)
    : floats_(floats),
      elem_bytes_(elem_bytes),
      device_(device),
      max_spare_(static_cast<size_t>(max_spare)) {}

PinnedStates::~PinnedStates() {
  for (Buffer& b : spare_) Free(b);
}

void PinnedStates::UseDevice() const { cudaSetDevice(device_); }

void PinnedStates::Free(Buffer& b) const {
  // A copy still reading or writing the buffer finishes first; errors cannot be reported from
  // here, and a failed copy has made the context's error sticky (the next step reports it). The
  // buffer's event is destroyed after this, on the same thread: with the device current too.
  UseDevice();
  if (b.last_copy) cudaEventSynchronize(b.last_copy.get());
  if (b.data != nullptr) cudaFreeHost(b.data);
  b.data = nullptr;
}

absl::StatusOr<PinnedStates::Buffer> PinnedStates::Take() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!spare_.empty()) {
      Buffer b = std::move(spare_.back());
      spare_.pop_back();
      return b;
    }
  }
  Buffer b;
  MODRWKV_ASSIGN_OR_RETURN(b.last_copy, CreateEvent());
  const cudaError_t err = cudaMallocHost(&b.data, static_cast<size_t>(bytes()));
  if (err != cudaSuccess) {
    // Reported here, and the caller falls back to a pageable copy: clear the thread's last error,
    // which Launch() reads after every launch and would otherwise fail the next step's first
    // kernel with this allocation's error.
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrFormat("pinning %d bytes of host memory for an offloaded state: %s", bytes(),
                        cudaGetErrorString(err)));
  }
  return b;
}

void PinnedStates::Give(Buffer b) {
  if (b.data == nullptr) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (spare_.size() < max_spare_) {
      spare_.push_back(std::move(b));
      return;
    }
  }
  Free(b);
}

absl::Status PinnedColdState::Read(absl::Span<float> out) const {
  if (static_cast<int64_t>(out.size()) != owner_->floats()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cold state has %d floats, the buffer %d", owner_->floats(), out.size()));
  }
  owner_->UseDevice();
  MODRWKV_RETURN_IF_ERROR(
      CudaStatus(cudaEventSynchronize(buf_.last_copy.get()), "reading an offloaded state"));
  if (owner_->elem_bytes() == 4) {
    std::memcpy(out.data(), buf_.data, out.size() * sizeof(float));
    return absl::OkStatus();
  }
  const auto* halves = static_cast<const uint16_t*>(buf_.data);
  for (size_t i = 0; i < out.size(); ++i) out[i] = F16ToF32(halves[i]);
  return absl::OkStatus();
}

}  // namespace modrwkv::cuda

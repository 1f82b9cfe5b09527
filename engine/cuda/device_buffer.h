// RAII owners of GPU resources: device memory, streams and events as unique_ptrs with deleters,
// made by factories that return StatusOr. No process-wide singletons.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"

namespace modrwkv::cuda {

struct CudaFreeDeleter {
  // cudaFree synchronises the device; free outside the hot loop. Errors cannot be reported from a
  // destructor and a sticky error has already surfaced at the failing launch/sync.
  void operator()(void* p) const noexcept {
    if (p != nullptr) cudaFree(p);
  }
};

// `count` elements of T in device memory.
template <typename T>
using DeviceBuffer = std::unique_ptr<T[], CudaFreeDeleter>;

// Allocates `count` uninitialised elements of T on the current device. count == 0 gives an empty
// (null) buffer.
template <typename T>
absl::StatusOr<DeviceBuffer<T>> AllocDevice(size_t count) {
  static_assert(std::is_trivially_copyable_v<T>, "device buffers hold plain data");
  if (count == 0) return DeviceBuffer<T>();
  if (count > SIZE_MAX / sizeof(T)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device buffer of ", count, " elements of ", sizeof(T), " bytes overflows"));
  }
  const size_t bytes = count * sizeof(T);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    const absl::Status s = CudaStatus(err, "cudaMalloc");
    return absl::Status(s.code(), absl::StrCat(s.message(), " (asked for ", bytes, " bytes)"));
  }
  return DeviceBuffer<T>(static_cast<T*>(p));
}

struct CudaStreamDeleter {
  void operator()(cudaStream_t s) const noexcept {
    if (s != nullptr) cudaStreamDestroy(s);
  }
};
using CudaStream = std::unique_ptr<std::remove_pointer_t<cudaStream_t>, CudaStreamDeleter>;

// A new stream; non-blocking by default so that it never serialises with the legacy stream 0.
inline absl::StatusOr<CudaStream> CreateStream(unsigned int flags = cudaStreamNonBlocking) {
  cudaStream_t s = nullptr;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, flags));
  return CudaStream(s);
}

struct CudaEventDeleter {
  void operator()(cudaEvent_t e) const noexcept {
    if (e != nullptr) cudaEventDestroy(e);
  }
};
using CudaEvent = std::unique_ptr<std::remove_pointer_t<cudaEvent_t>, CudaEventDeleter>;

// A new event; without timing by default (cheaper to record and wait on).
inline absl::StatusOr<CudaEvent> CreateEvent(unsigned int flags = cudaEventDisableTiming) {
  cudaEvent_t e = nullptr;
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, flags));
  return CudaEvent(e);
}

}  // namespace modrwkv::cuda

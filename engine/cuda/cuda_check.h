// CUDA runtime and cuBLAS error codes as absl::Status: a GPU failure is reported to the caller
// (and from there to the request), never an abort.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modrwkv::cuda {

// OK for cudaSuccess; otherwise "<what>: <cudaErrorName> (<code>): <description>" with a code
// that says what kind of failure it was (out of memory -> kResourceExhausted, no device or driver
// -> kFailedPrecondition, bad argument -> kInvalidArgument, anything else -> kInternal).
absl::Status CudaStatus(cudaError_t err, const char* what);

// The same for cuBLAS.
absl::Status CublasStatus(cublasStatus_t st, const char* what);

// Errors after which the CUDA context is unusable and every later call fails the same way (an
// illegal address, a failed launch, an uncorrectable ECC error, ...): the process must be
// restarted to use the device again.
bool IsStickyCudaError(cudaError_t err);

// Number of visible CUDA devices. 0, not an error, when the machine has no device or no driver
// (the CPU-only case); an error only for a driver that is present but broken.
absl::StatusOr<int> CudaDeviceCount();

}  // namespace modrwkv::cuda

// Returns a Status from the enclosing function if the CUDA runtime call `expr` fails; the message
// names the call.
#define MODRWKV_CUDA_RETURN_IF_ERROR(expr)                          \
  do {                                                              \
    const cudaError_t modrwkv_cuda_err_ = (expr);                   \
    if (modrwkv_cuda_err_ != cudaSuccess) {                         \
      return ::modrwkv::cuda::CudaStatus(modrwkv_cuda_err_, #expr); \
    }                                                               \
  } while (0)

// The same for a cuBLAS call.
#define MODRWKV_CUBLAS_RETURN_IF_ERROR(expr)                           \
  do {                                                                 \
    const cublasStatus_t modrwkv_cublas_st_ = (expr);                  \
    if (modrwkv_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                 \
      return ::modrwkv::cuda::CublasStatus(modrwkv_cublas_st_, #expr); \
    }                                                                  \
  } while (0)

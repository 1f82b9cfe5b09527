// cuBLAS, opened at run time (dlopen) when the first GPU model is built instead of linked.
//
// Linking it would load libcublasLt into every process of the product, GPU or not, and that
// library carries 94 KB of static thread-local storage, which glibc places on every thread's
// stack: the metrics server's threads (civetweb, started with small stacks) then fail to start
// ("null context when constructing CivetServer"). Opened on demand, its TLS is allocated per
// thread only where cuBLAS runs, and a CPU-only host needs no cuBLAS at all.
#pragma once

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace modrwkv::cuda {

// The entry points the backend uses (cublas_v2.h names without the _v2 suffix).
struct CublasApi {
  cublasStatus_t (*Create)(cublasHandle_t* handle);
  cublasStatus_t (*Destroy)(cublasHandle_t handle);
  cublasStatus_t (*SetStream)(cublasHandle_t handle, cudaStream_t stream);
  cublasStatus_t (*SetMathMode)(cublasHandle_t handle, cublasMath_t mode);
  cublasStatus_t (*SetWorkspace)(cublasHandle_t handle, void* workspace, size_t bytes);
  cublasStatus_t (*Sgemm)(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                          int m, int n, int k, const float* alpha, const float* a, int lda,
                          const float* b, int ldb, const float* beta, float* c, int ldc);
  // Many products of one shape at fixed strides (an encoder's attention, one per head).
  cublasStatus_t (*SgemmStridedBatched)(cublasHandle_t handle, cublasOperation_t transa,
                                        cublasOperation_t transb, int m, int n, int k,
                                        const float* alpha, const float* a, int lda,
                                        long long stride_a, const float* b, int ldb,
                                        long long stride_b, const float* beta, float* c, int ldc,
                                        long long stride_c, int batch);
  // Mixed types: the bf16-weight products on tensor cores (bf16 A and B, f32 C and accumulation).
  cublasStatus_t (*GemmEx)(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const void* alpha,
                           const void* a, cudaDataType a_type, int lda, const void* b,
                           cudaDataType b_type, int ldb, const void* beta, void* c,
                           cudaDataType c_type, int ldc, cublasComputeType_t compute,
                           cublasGemmAlgo_t algo);
};

// Opens libcublas.so.13 (then libcublas.so) once per process; FAILED_PRECONDITION naming the
// library and dlerror() when it or a symbol is missing. Thread-safe.
absl::StatusOr<const CublasApi*> Cublas();

}  // namespace modrwkv::cuda

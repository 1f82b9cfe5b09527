// The emulator's cuBLAS: modrwkv::cuda::Cublas() (engine/cuda/cublas_api.h) with the entry points
// the backend and the encoders use, written from the BLAS definition: column-major operands,
// C = alpha * op(A) * op(B) + beta * C, C not read when beta is 0, and the argument checks
// cuBLAS documents (a leading dimension too small is CUBLAS_STATUS_INVALID_VALUE). The products
// run on the handle's stream like any queued work; sums are f32 in order of k, as the tests'
// tolerances against the CPU assume of cuBLAS anyway; 16-bit results are rounded to nearest even;
// with CUBLAS_TF32_TENSOR_OP_MATH set on the handle, f32 inputs are rounded to TF32 first.
#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cuda/cublas_api.h"
#include "tests/engine/cuda/emu/cuda_emu.h"  // first: it defines the device dialect

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace modrwkv::cuda {
namespace {

// x rounded to TF32 as tensor cores take an f32 input (cvt.rna.tf32.f32: 10 mantissa bits, to
// nearest with ties away from zero), kept in a float's 32 bits.
float ToTf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;  // finite only
  std::memcpy(&x, &bits, 4);
  return x;
}

// One operand as floats: element (row, col) of op(X), an rows x cols matrix; f32 elements rounded
// to TF32 when the handle's math mode lets the product use TF32 tensor cores.
struct Operand {
  const void* data;
  cudaDataType type;
  int ld;
  bool transposed;
  bool tf32 = false;

  float At(int row, int col) const {
    const float v = Raw(row, col);
    return tf32 ? ToTf32(v) : v;
  }
  float Raw(int row, int col) const {
    const int64_t i =
        transposed ? static_cast<int64_t>(row) * ld + col : static_cast<int64_t>(col) * ld + row;
    switch (type) {
      case CUDA_R_32F:
        return static_cast<const float*>(data)[i];
      case CUDA_R_16BF: {
        uint16_t bits;
        std::memcpy(&bits, static_cast<const uint16_t*>(data) + i, 2);
        uint32_t f = static_cast<uint32_t>(bits) << 16;
        float v;
        std::memcpy(&v, &f, 4);
        return v;
      }
      case CUDA_R_16F:
        return __half2float(static_cast<const __half*>(data)[i]);
      default:
        return 0.0f;
    }
  }
};

bool Valid(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; }

// The checks cuBLAS makes of a product's shape and leading dimensions.
cublasStatus_t Check(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                     int n, int k, int lda, int ldb, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!Valid(ta) || !Valid(tb) || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldb < std::max(1, tb == CUBLAS_OP_N ? k : n)) return CUBLAS_STATUS_INVALID_VALUE;
  if (ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

// C (m x n, f32, column-major) = alpha * op(A) op(B) + beta * C.
void Product(const Operand& a, const Operand& b, float alpha, float beta, float* c, int ldc, int m,
             int n, int k) {
  std::vector<float> arow(k);
  for (int i = 0; i < m; ++i) {
    for (int p = 0; p < k; ++p) arow[p] = a.At(i, p);
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int p = 0; p < k; ++p) sum += arow[p] * b.At(p, j);
      float& out = c[static_cast<int64_t>(j) * ldc + i];
      out = beta == 0.0f ? alpha * sum : alpha * sum + beta * out;
    }
  }
}

cublasStatus_t Create(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t Destroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t SetStream(cublasHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t SetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

// Whether f32 products on `handle` round their inputs to TF32 (the mode asks for it).
bool Tf32(cublasHandle_t handle) { return (handle->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH; }
cublasStatus_t SetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t Sgemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                     int n, int k, const float* alpha, const float* a, int lda, const float* b,
                     int ldb, const float* beta, float* c, int ldc) {
  if (cublasStatus_t s = Check(handle, ta, tb, m, n, k, lda, ldb, ldc); s) return s;
  const Operand oa{a, CUDA_R_32F, lda, ta == CUBLAS_OP_T, Tf32(handle)},
      ob{b, CUDA_R_32F, ldb, tb == CUBLAS_OP_T, Tf32(handle)};
  const float al = *alpha, be = *beta;
  cuda_emu::QueueWork(handle->stream, [=] { Product(oa, ob, al, be, c, ldc, m, n, k); });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t SgemmStridedBatched(cublasHandle_t handle, cublasOperation_t ta,
                                   cublasOperation_t tb, int m, int n, int k, const float* alpha,
                                   const float* a, int lda, long long stride_a, const float* b,
                                   int ldb, long long stride_b, const float* beta, float* c,
                                   int ldc, long long stride_c, int batch) {
  if (cublasStatus_t s = Check(handle, ta, tb, m, n, k, lda, ldb, ldc); s) return s;
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *alpha, be = *beta;
  const bool tf32 = Tf32(handle);
  cuda_emu::QueueWork(handle->stream, [=] {
    for (int q = 0; q < batch; ++q) {
      const Operand oa{a + q * stride_a, CUDA_R_32F, lda, ta == CUBLAS_OP_T, tf32};
      const Operand ob{b + q * stride_b, CUDA_R_32F, ldb, tb == CUBLAS_OP_T, tf32};
      Product(oa, ob, al, be, c + q * stride_c, ldc, m, n, k);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t GemmEx(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                      int n, int k, const void* alpha, const void* a, cudaDataType a_type, int lda,
                      const void* b, cudaDataType b_type, int ldb, const void* beta, void* c,
                      cudaDataType c_type, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (cublasStatus_t s = Check(handle, ta, tb, m, n, k, lda, ldb, ldc); s) return s;
  auto input = [](cudaDataType t) {
    return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F;
  };
  // The combinations this emulation computes (the ones the backend asks for): 16- or 32-bit
  // inputs of one type and f32 accumulation, out in f32 or, with beta 0, in the inputs' 16-bit
  // type (the f32 result rounded to nearest even).
  const bool f32_compute =
      compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
      compute == CUBLAS_COMPUTE_32F_FAST_TF32 || compute == CUBLAS_COMPUTE_32F_FAST_16BF ||
      compute == CUBLAS_COMPUTE_32F_FAST_16F;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const bool half_out = c_type == a_type && a_type != CUDA_R_32F && be == 0.0f;
  if (!input(a_type) || a_type != b_type || (c_type != CUDA_R_32F && !half_out) || !f32_compute) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  // TF32 for f32 inputs under the handle's mode or a TF32 compute type (16-bit inputs are exact
  // in TF32 either way).
  const bool tf32 =
      a_type == CUDA_R_32F && (Tf32(handle) || compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  const Operand oa{a, a_type, lda, ta == CUBLAS_OP_T, tf32},
      ob{b, b_type, ldb, tb == CUBLAS_OP_T, tf32};
  if (half_out) {
    auto* ch = static_cast<uint16_t*>(c);
    cuda_emu::QueueWork(handle->stream, [=] {
      std::vector<float> cf(static_cast<size_t>(ldc) * n);
      Product(oa, ob, al, 0.0f, cf.data(), ldc, m, n, k);
      for (int j = 0; j < n; ++j) {
        for (int i = 0; i < m; ++i) {
          const int64_t e = static_cast<int64_t>(j) * ldc + i;
          ch[e] = a_type == CUDA_R_16BF ? F32ToBF16(cf[e]) : F32ToF16(cf[e]);
        }
      }
    });
    return CUBLAS_STATUS_SUCCESS;
  }
  float* cf = static_cast<float*>(c);
  cuda_emu::QueueWork(handle->stream, [=] { Product(oa, ob, al, be, cf, ldc, m, n, k); });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

absl::StatusOr<const CublasApi*> Cublas() {
  static const CublasApi api = {Create,       Destroy, SetStream,           SetMathMode,
                                SetWorkspace, Sgemm,   SgemmStridedBatched, GemmEx};
  return &api;
}

}  // namespace modrwkv::cuda

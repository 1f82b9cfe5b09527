// Dense layers of the CPU backend: Y[R, out] (=|+=) X[R, in] * W^T with W stored [out, in].
// Few rows (decode) use the weight-streaming GEMV kernel; many rows (prefill, large batches) use
// OpenBLAS sgemm, converting bf16 weights to f32 one panel at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/thread_pool.h"
#include "engine/tensor.h"

namespace modrwkv::cpu {

struct Blas;

// 64-byte aligned storage.
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { Resize(n); }
  void Resize(size_t n);
  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T[], Free> ptr_;
  size_t n_ = 0;
};

// A weight matrix, [rows = out][cols = in]: f32, bf16, or int8 with a scale per row.
struct Matrix {
  WType type = WType::kF32;
  int rows = 0;
  int cols = 0;
  AlignedBuffer<float> f32;
  AlignedBuffer<uint16_t> bf16;
  AlignedBuffer<int8_t> i8;
  std::vector<float> scale;  // [rows], kI8 only: w[r][c] = i8[r][c] * scale[r]

  const void* data() const {
    switch (type) {
      case WType::kF32:
        return f32.data();
      case WType::kBF16:
        return bf16.data();
      case WType::kI8:
        return i8.data();
    }
    return nullptr;
  }
  int64_t bytes() const {
    const int64_t n = static_cast<int64_t>(rows) * cols;
    switch (type) {
      case WType::kF32:
        return 4 * n;
      case WType::kBF16:
        return 2 * n;
      case WType::kI8:
        return n + 4LL * rows;
    }
    return 0;
  }
  // Widens rows [r0, r0 + n) to f32 into dst ([n][cols]).
  void RowsToF32(int r0, int n, float* dst) const;
};

// Builds a Matrix from a checkpoint tensor (any dtype), transposing [in, out] storage. kI8
// quantises each output row symmetrically: scale = max|w| / 127, q = round(w / scale).
Matrix MakeMatrix(const TensorView& t, bool transposed, WType type);

// Runs dense layers on a thread pool. Owns per-thread scratch for bf16 panels.
class LinearRunner {
 public:
  LinearRunner(ThreadPool* pool, const Blas* blas);

  // Y[r*ldy + o] (=|+=) sum_i X[r*ldx + i] * W[o][i] for r < R, o < W.rows.
  void Run(const Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
           bool accumulate);

  // Rows at or below which the weight-streaming kernel is used instead of sgemm: each task keeps
  // its slice of weight rows in L1/L2 while every group of 4 inputs passes over it, so weights
  // are read from memory once per step either way, without sgemm's packing cost at small sizes.
  int gemv_max_rows() const { return gemv_max_rows_; }
  void set_gemv_max_rows(int rows) { gemv_max_rows_ = rows; }

 private:
  void RunGemv(const Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
               bool accumulate);
  void RunGemm(const Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
               bool accumulate);

  ThreadPool* pool_;
  const Blas* blas_;  // may be null: GEMV kernel fallback for every size
  int gemv_max_rows_ = 64;
  std::vector<AlignedBuffer<float>> panels_;  // per thread, bf16 -> f32 panel
};

}  // namespace modrwkv::cpu

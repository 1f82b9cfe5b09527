// Dense layers of the CPU backend: Y[R, out] (=|+=) X[R, in] * W^T. Weights are packed once at
// load time into column panels, and one outer-product kernel (PanelGemm) serves every row count:
// decode (1 row per sequence), batched decode and prefill.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::cpu {

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

// How a Matrix is stored: kRows row-major [rows][cols] (the embedding table, a row gather);
// kPanels packed for PanelGemm (the dense layers, see kernels.h); kInputRows input-major, the
// panels' rows interleaved (PanelGeometry::InputMajor): the channel mix's value matrix, whose
// inputs (relu^2 activations) are mostly zero in a decode step, so that a product of a few rows
// reads only the weights of the nonzero inputs (SparseRowsGemm; for int4 SparseI4Gemm, over
// kernels.h's input-major int4 format); kDotChunks (int8 only) in
// chunks for integer products (I8DotGemm, kernels.h) on x rounded to int8 by group: the head of
// an int4 model, whose products then run as the int4 ones do.
enum class Layout { kRows, kPanels, kInputRows, kDotChunks };

// A weight matrix, logically [rows = out][cols = in]: f32, bf16, int8 with a scale per row, or
// int4 with a scale per row and group of kI4Group inputs (kPanels or kInputRows; products by
// I4Gemm or SparseI4Gemm on x rounded to int8 by group, kernels.h).
struct Matrix {
  WType type = WType::kF32;
  Layout layout = Layout::kRows;
  int rows = 0;
  int cols = 0;
  AlignedBuffer<float> f32;
  AlignedBuffer<uint16_t> bf16;
  AlignedBuffer<int8_t> i8;
  std::vector<float> scale;  // [rows], kI8 only: w[r][c] = i8 value * scale[r]
  // The integer products' panels: kI4's blocks of scales and nibbles (I4PanelBytes(cols) per
  // panel), or kI8 kDotChunks' offset bytes (I8DotPanelBytes(cols) per panel).
  AlignedBuffer<uint8_t> chunks;

  const void* data() const {
    switch (type) {
      case WType::kF32:
        return f32.data();
      case WType::kBF16:
        return bf16.data();
      case WType::kI8:
        if (layout == Layout::kDotChunks) return chunks.data();
        return i8.data();
      case WType::kI4:
        return chunks.data();
    }
    return nullptr;
  }
  int panels() const { return (rows + kPanelCols - 1) / kPanelCols; }
  PanelGeometry geometry() const {
    return layout == Layout::kInputRows ? PanelGeometry::InputMajor(rows)
                                        : PanelGeometry::Packed(cols);
  }
  // Bytes stored (and read by one pass over the matrix), padding included.
  int64_t bytes() const {
    const int64_t stored_rows = layout == Layout::kRows ? rows : int64_t{kPanelCols} * panels();
    const int64_t n = stored_rows * cols;
    switch (type) {
      case WType::kF32:
        return 4 * n;
      case WType::kBF16:
        return 2 * n;
      case WType::kI8:
        return (layout == Layout::kDotChunks ? panels() * I8DotPanelBytes(cols) : n) + 4LL * rows;
      case WType::kI4:
        return layout == Layout::kInputRows ? I4InputMajorBytes(rows, cols)
                                            : panels() * I4PanelBytes(cols);
    }
    return 0;
  }
};

// Builds a Matrix from a checkpoint tensor (any dtype), stored [out, in] or, if `transposed`,
// [in, out]. kI8 quantises each output row symmetrically: scale = max|w| / 127,
// q = round(w / scale). kI8 needs the kPanels, kInputRows or kDotChunks layout. kI4 quantises each
// output row's groups of kI4Group inputs: m = the group's weight of largest magnitude, scale = m /
// -8 rounded to bf16, q - 8 = clamp(round(w / scale), -8, 7) (so m is stored exactly up to the
// scale's rounding, and -8..7 all serve; m from the group's finite weights, a weight that is
// not finite becomes level 0); kI4 needs the kPanels or kInputRows layout (the same levels and
// scales in both).
Matrix MakeMatrix(const TensorView& t, bool transposed, WType type, Layout layout);

// W[out][in] as f32, row-major, whatever the Matrix's type and layout (bf16 widened, int8
// scaled): for a consumer with its own GEMM, such as an encoder on a GPU.
std::vector<float> UnpackMatrix(const Matrix& m);

// Runs dense layers (kPanels matrices) on a thread pool.
class LinearRunner {
 public:
  explicit LinearRunner(ThreadPool* pool) : pool_(pool) {}

  // Y[r*ldy + o] (=|+=) sum_i X[r*ldx + i] * W[o][i] for r < rows, o < w.rows. Every weight
  // is read from memory at most once per call; each output's value depends only on its own row
  // of X (PanelGemm's batch invariance), so how requests are batched never changes results. A
  // kInputRows matrix times at most kSparseMaxRows rows reads only the weights of the inputs
  // that are not zero in every row (the same results: a zero input adds nothing); an int4
  // kInputRows matrix does so kSparseMaxRows rows at a time whatever the rows.
  void Run(const Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
           bool accumulate);

  // The same product given also `input_major`, the same matrix stored Layout::kInputRows: a call
  // of up to kSparseMaxRows rows with at most kSparseMaxDensity of its inputs nonzero in some row
  // runs on it, reading only those inputs' weights (SparseRowsGemm; int4: SparseI4Gemm, the
  // zeros of x as rounded to int8, kSparseMaxDensityI4); any other call runs on `w`. The same
  // results either way.
  void RunSkippingZeros(const Matrix& w, const Matrix& input_major, const float* x, int64_t ldx,
                        int rows, float* y, int64_t ldy, bool accumulate);
  // Above this fraction of nonzero inputs, reading their rows of an input-major matrix costs more
  // than reading the packed one whole: the sparse kernel reads a matrix's rows at ~0.8x the packed
  // kernel's rate (0.1B's value matrix, one row: 168-181 us for all of them against 139 us).
  static constexpr double kSparseMaxDensity = 0.75;
  // The same for int4 (SparseI4Gemm): its rows cost more arithmetic per byte than the packed
  // panels' (nibbles widened and four rows interleaved per 64 columns), so it wins only below
  // ~35-40% nonzero (0.1B's value matrix, one row: 64 us at 30% against 87 us packed, 104 us at
  // 50% against 79 us; docs/benchmarks.md).
  static constexpr double kSparseMaxDensityI4 = 0.35;

  // Inputs of the few-row products that could skip zeros so far (Run on a kInputRows matrix,
  // RunSkippingZeros): how many there were, and how many of them had their weights read.
  struct SparseCounts {
    int64_t inputs = 0;
    int64_t read = 0;
  };
  const SparseCounts& sparse_counts() const { return sparse_counts_; }

 private:
  // Lists in nonzero_ the inputs of x that are nonzero in some row (counted in sparse_counts_).
  void ListNonzero(int in, const float* x, int64_t ldx, int rows);
  // The product over the inputs in nonzero_, on an input-major matrix (their rows counted read).
  void RunSparse(const Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
                 bool accumulate);
  // x rounded to int8 by group for the integer products (QuantizeRowsI4 into xq_, xscale_, xsum_).
  void QuantizeX(int in, const float* x, int64_t ldx, int rows);
  // ListNonzero over rows [r0, r0 + rows) of the rounded x (xq_).
  void ListNonzeroQuantised(int in, int r0, int rows);
  // The integer products on the rounded x: all of it (RunDot: int4 panels or int8 kDotChunks), or
  // rows [r0, r0 + rows) over the inputs in nonzero_ on an int4 input-major matrix (RunSparseI4,
  // results at y).
  void RunDot(const Matrix& w, int rows, float* y, int64_t ldy, bool accumulate);
  void RunSparseI4(const Matrix& w, int r0, int rows, float* y, int64_t ldy, bool accumulate);

  ThreadPool* pool_;
  AlignedBuffer<float> xpack_;  // x packed for the kernel (PackRows), shared by the tasks
  AlignedBuffer<int8_t> xq_;    // for the integer products: x rounded by group (QuantizeX)
  AlignedBuffer<int32_t> xi_;   // xq_ interleaved for the tiles (RunDot, InterleaveRowsI4)
  AlignedBuffer<float> xscale_;
  std::vector<int32_t> xsum_;
  std::vector<int32_t> nonzero_;                  // RunSparse's inputs, shared by the tasks
  std::vector<AlignedBuffer<float>> sparse_acc_;  // RunSparse's sums, one buffer per thread
  SparseCounts sparse_counts_;
};

}  // namespace modrwkv::cpu

#include "engine/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "engine/cpu/blas.h"

namespace modrwkv::cpu {
namespace {

// cblas enums (values fixed by the CBLAS standard).
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

// Output rows per GEMV task: enough bytes per task (~48 KB) to amortise the scheduling.
int GemvChunk(const Matrix& w) {
  const int64_t row_bytes = w.bytes() / std::max(w.rows, 1);
  return static_cast<int>(
             std::clamp<int64_t>(48 * 1024 / std::max<int64_t>(row_bytes, 1), 4, 256)) &
         ~3;
}

// Output rows converted per bf16 panel: the panel (rows x in f32) should sit in L2.
constexpr int64_t kPanelBytes = 512 * 1024;

}  // namespace

template <typename T>
void AlignedBuffer<T>::Resize(size_t n) {
  if (n == n_) return;
  ptr_.reset(n ? static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t(64))) : nullptr);
  n_ = n;
}
template class AlignedBuffer<float>;
template class AlignedBuffer<uint16_t>;
template class AlignedBuffer<int8_t>;

void Matrix::RowsToF32(int r0, int n, float* dst) const {
  const int64_t off = static_cast<int64_t>(r0) * cols;
  switch (type) {
    case WType::kF32:
      std::memcpy(dst, f32.data() + off, static_cast<size_t>(n) * cols * 4);
      return;
    case WType::kBF16:
      Bf16ToF32(bf16.data() + off, static_cast<int64_t>(n) * cols, dst);
      return;
    case WType::kI8:
      for (int r = 0; r < n; ++r) {
        I8ToF32(i8.data() + off + static_cast<int64_t>(r) * cols, cols, scale[r0 + r],
                dst + static_cast<int64_t>(r) * cols);
      }
      return;
  }
}

Matrix MakeMatrix(const TensorView& t, bool transposed, WType type) {
  Matrix m;
  m.type = type;
  const int64_t d0 = t.shape[0], d1 = t.shape[1];
  m.rows = static_cast<int>(transposed ? d1 : d0);
  m.cols = static_cast<int>(transposed ? d0 : d1);
  const size_t n = static_cast<size_t>(d0 * d1);
  std::vector<float> tmp;
  const float* src;
  if (t.dtype == DType::kF32 && !transposed && type == WType::kF32) {
    m.f32.Resize(n);
    std::memcpy(m.f32.data(), t.data, n * 4);
    return m;
  }
  if (t.dtype == DType::kBF16 && !transposed && type == WType::kBF16) {
    m.bf16.Resize(n);
    std::memcpy(m.bf16.data(), t.data, n * 2);
    return m;
  }
  tmp.resize(n);
  ConvertToF32(t.dtype, t.data, n, tmp.data());
  src = tmp.data();
  if (transposed) {
    std::vector<float> tr(n);
    for (int64_t i = 0; i < d0; ++i)
      for (int64_t j = 0; j < d1; ++j) tr[j * d0 + i] = src[i * d1 + j];
    tmp.swap(tr);
    src = tmp.data();
  }
  if (type == WType::kF32) {
    m.f32.Resize(n);
    std::memcpy(m.f32.data(), src, n * 4);
  } else if (type == WType::kBF16) {
    m.bf16.Resize(n);
    for (size_t i = 0; i < n; ++i) m.bf16.data()[i] = F32ToBF16(src[i]);
  } else {
    m.i8.Resize(n);
    m.scale.resize(m.rows);
    for (int r = 0; r < m.rows; ++r) {
      const float* row = src + static_cast<int64_t>(r) * m.cols;
      float amax = 0;
      for (int c = 0; c < m.cols; ++c) amax = std::max(amax, std::abs(row[c]));
      const float scale = amax > 0 ? amax / 127.0f : 1.0f;
      m.scale[r] = scale;
      int8_t* q = m.i8.data() + static_cast<int64_t>(r) * m.cols;
      for (int c = 0; c < m.cols; ++c) {
        q[c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / scale), -127.0f, 127.0f));
      }
    }
  }
  return m;
}

LinearRunner::LinearRunner(ThreadPool* pool, const Blas* blas)
    : pool_(pool), blas_(blas), panels_(pool->size()) {
  if (const char* e = std::getenv("MODRWKV_GEMV_MAX_ROWS")) gemv_max_rows_ = std::atoi(e);
}

void LinearRunner::Run(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                       int64_t ldy, bool accumulate) {
  if (rows <= 0) return;
  if (rows <= gemv_max_rows_ || blas_ == nullptr) {
    RunGemv(w, x, ldx, rows, y, ldy, accumulate);
  } else {
    RunGemm(w, x, ldx, rows, y, ldy, accumulate);
  }
}

void LinearRunner::RunGemv(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                           int64_t ldy, bool accumulate) {
  const int chunk = GemvChunk(w);
  const int64_t tasks = (w.rows + chunk - 1) / chunk;
  // With more than one group of inputs, bf16 rows are widened once per task into an f32 slice (it
  // stays in L2) instead of once per group in registers; the values and the order of the FMAs
  // are the same either way, so a row's result does not depend on how many rows run with it.
  // int8 is not widened: its scale is applied after the sum, and widening would apply it before.
  const bool widen = w.type == WType::kBF16 && rows > kMaxGemvRows;
  pool_->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int o0 = static_cast<int>(t * chunk);
    const int o1 = std::min(w.rows, o0 + chunk);
    WType wt = w.type;
    const void* base = w.data();
    int first_row = 0;  // row index of `base`'s first row
    if (widen) {
      AlignedBuffer<float>& buf = panels_[thread];
      const size_t need = static_cast<size_t>(o1 - o0) * w.cols;
      if (buf.size() < need) buf.Resize(need);
      w.RowsToF32(o0, o1 - o0, buf.data());
      wt = WType::kF32;
      base = buf.data();
      first_row = o0;
    }
    // Blocks of weight rows outside, groups of inputs inside: a block (<= 8 rows) stays in L1
    // while every group of inputs passes over it. The output is shifted so that row o of the
    // matrix lands in column o of y.
    constexpr int kRowBlock = 8;
    for (int b0 = o0; b0 < o1; b0 += kRowBlock) {
      const int b1 = std::min(o1, b0 + kRowBlock);
      for (int r = 0; r < rows; r += kMaxGemvRows) {
        const int nb = std::min(kMaxGemvRows, rows - r);
        Gemv(wt, base, w.scale.data(), w.cols, w.cols, b0 - first_row, b1 - first_row, x + r * ldx,
             ldx, nb, y + r * ldy + first_row, ldy, accumulate);
      }
    }
  });
}

void LinearRunner::RunGemm(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                           int64_t ldy, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (w.type == WType::kF32) {
    // Split the output columns over the pool; each task is one single-threaded sgemm.
    const int threads = pool_->size();
    int chunk = (w.rows + threads - 1) / threads;
    chunk = std::max(16, (chunk + 15) & ~15);
    const int64_t tasks = (w.rows + chunk - 1) / chunk;
    pool_->ParallelFor(tasks, [&](int64_t t, int) {
      const int o0 = static_cast<int>(t * chunk);
      const int n = std::min(w.rows, o0 + chunk) - o0;
      blas_->sgemm(kRowMajor, kNoTrans, kTrans, rows, n, w.cols, 1.0f, x, static_cast<int>(ldx),
                   w.f32.data() + static_cast<int64_t>(o0) * w.cols, w.cols, beta, y + o0,
                   static_cast<int>(ldy));
    });
    return;
  }
  // bf16/int8: convert a panel of output rows to f32 (kept in L2), multiply, move on.
  const int panel =
      static_cast<int>(std::clamp<int64_t>(kPanelBytes / (4LL * w.cols), 16, 1024)) & ~15;
  const int64_t tasks = (w.rows + panel - 1) / panel;
  pool_->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int o0 = static_cast<int>(t * panel);
    const int n = std::min(w.rows, o0 + panel) - o0;
    AlignedBuffer<float>& buf = panels_[thread];
    if (buf.size() < static_cast<size_t>(panel) * w.cols)
      buf.Resize(static_cast<size_t>(panel) * w.cols);
    w.RowsToF32(o0, n, buf.data());
    blas_->sgemm(kRowMajor, kNoTrans, kTrans, rows, n, w.cols, 1.0f, x, static_cast<int>(ldx),
                 buf.data(), w.cols, beta, y + o0, static_cast<int>(ldy));
  });
}

}  // namespace modrwkv::cpu

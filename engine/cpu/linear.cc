#include "engine/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

namespace modrwkv::cpu {
namespace {

// Where weight W[o][i] of a matrix of panels laid out as `g` is stored (kernels.h): bf16 pairs
// column c of a panel with column c + 16 in one 32-bit word.
int64_t PanelIndex(PanelGeometry g, bool bf16, int o, int i) {
  const int p = o / kPanelCols, c = o % kPanelCols;
  const int slot = bf16 ? 2 * (c % 16) + c / 16 : c;
  return p * g.panel_stride + static_cast<int64_t>(i) * g.row_stride + slot;
}

// Packs W[o][i] = at(o, i) into panels laid out as `g`, padding columns zero.
template <typename T, typename At, typename Conv>
void PackPanels(int rows, int cols, PanelGeometry g, At at, Conv conv, AlignedBuffer<T>* dst) {
  const int panels = (rows + kPanelCols - 1) / kPanelCols;
  dst->Resize(static_cast<size_t>(panels) * kPanelCols * cols);
  std::memset(dst->data(), 0, dst->size() * sizeof(T));
  for (int o = 0; o < rows; ++o) {
    for (int i = 0; i < cols; ++i)
      dst->data()[PanelIndex(g, sizeof(T) == 2, o, i)] = conv(o, at(o, i));
  }
}

// v rounded to the nearest integer level in [lo, hi]; a weight that is not finite (a corrupt
// checkpoint) becomes 0 rather than an undefined conversion to an integer.
float Level(float v, float lo, float hi) {
  return std::isfinite(v) ? std::clamp(std::nearbyint(v), lo, hi) : 0.0f;
}

// Where weight W[o][i] of an int4 matrix of `rows` outputs and `in` inputs lies (kernels.h), in
// packed panels or input-major: its scale's bf16 word and the byte holding its nibble (the high
// one for columns 16..31 of a panel, or positions 32..63 of an input row's block).
struct I4Place {
  int64_t scale;
  int64_t byte;
  bool high;
};
I4Place I4At(Layout layout, int rows, int in, int o, int i) {
  if (layout == Layout::kInputRows) {
    const int64_t words = I4ScaleRowWords(rows), groups = (in + kI4Group - 1) / kI4Group;
    const int pos = I4RowPosition(o % kI4RowCols);
    return {2 * (i / kI4Group * words + o),
            2 * groups * words + i * I4InputRowBytes(rows) + o / kI4RowCols * (kI4RowCols / 2) +
                pos % 32,
            pos >= 32};
  }
  const int c = o % kPanelCols;
  const int64_t block = o / kPanelCols * I4PanelBytes(in) + int64_t{i / kI4Group} * kI4BlockBytes;
  const int k = i % kI4Group;  // chunk k / 4, byte 4 * (c % 16) + k % 4
  return {block + 2 * (2 * (c % 16) + c / 16),
          block + 2 * kPanelCols + 64 * (k / 4) + 4 * (c % 16) + k % 4, c >= 16};
}

// Quantises W[o][i] = at(o, i) into `bytes` of int4 stored as `layout` (Matrix::chunks; the comment
// on MakeMatrix says how). The scale comes from the group's finite weights: a weight that is not
// finite (a corrupt checkpoint) becomes level 0 without making its group's scale infinite.
template <typename At>
void PackI4(int rows, int cols, Layout layout, int64_t bytes, At at, AlignedBuffer<uint8_t>* dst) {
  dst->Resize(static_cast<size_t>(bytes));
  std::memset(dst->data(), 0x88, dst->size());  // padding: q - 8 = 0
  for (int o = 0; o < rows; ++o) {
    for (int g0 = 0; g0 < cols; g0 += kI4Group) {
      const int g1 = std::min(cols, g0 + kI4Group);
      float m = 0;
      for (int i = g0; i < g1; ++i) {
        if (std::isfinite(at(o, i)) && std::abs(at(o, i)) > std::abs(m)) m = at(o, i);
      }
      const uint16_t scale_word = F32ToBF16(m / -8.0f);
      const float scale = BF16ToF32(scale_word);
      std::memcpy(dst->data() + I4At(layout, rows, cols, o, g0).scale, &scale_word, 2);
      for (int i = g0; i < g1; ++i) {
        const float q = scale != 0 ? Level(at(o, i) / scale, -8, 7) : 0;
        const I4Place pl = I4At(layout, rows, cols, o, i);
        uint8_t& byte = dst->data()[pl.byte];
        const uint8_t nibble = static_cast<uint8_t>(static_cast<int>(q) + 8);
        byte = pl.high ? static_cast<uint8_t>((byte & 0x0F) | nibble << 4)
                       : static_cast<uint8_t>((byte & 0xF0) | nibble);
      }
    }
  }
}

// Where W[o][i] of an int8 kDotChunks matrix of `in` inputs lies (kernels.h).
int64_t I8DotAt(int in, int o, int i) {
  const int c = o % kPanelCols, k = i % kI4Group;
  return o / kPanelCols * I8DotPanelBytes(in) + int64_t{i / kI4Group} * kI8DotBlockBytes +
         128 * (k / 4) + 64 * (c / 16) + 4 * (c % 16) + k % 4;
}

// Packs W[o][i] = at(o, i) as int8 levels (level(o, w), MakeMatrix's rounding) into chunks for
// the integer products, offset by 128 (Matrix::chunks, kernels.h).
template <typename At, typename ToLevel>
void PackDotChunks(int rows, int cols, At at, ToLevel level, AlignedBuffer<uint8_t>* dst) {
  const int panels = (rows + kPanelCols - 1) / kPanelCols;
  dst->Resize(static_cast<size_t>(panels * I8DotPanelBytes(cols)));
  std::memset(dst->data(), 128, dst->size());  // padding: level 0
  for (int o = 0; o < rows; ++o) {
    for (int i = 0; i < cols; ++i) {
      dst->data()[I8DotAt(cols, o, i)] = static_cast<uint8_t>(level(o, at(o, i)) + 128);
    }
  }
}

// W[o][i] of an int4 matrix.
float I4Value(const Matrix& m, int o, int i) {
  const I4Place pl = I4At(m.layout, m.rows, m.cols, o, i);
  uint16_t scale_word;
  std::memcpy(&scale_word, m.chunks.data() + pl.scale, 2);
  const uint8_t byte = m.chunks.data()[pl.byte];
  return static_cast<float>((pl.high ? byte >> 4 : byte & 15) - 8) * BF16ToF32(scale_word);
}

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
template class AlignedBuffer<uint8_t>;

std::vector<float> UnpackMatrix(const Matrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows) * m.cols);
  auto value = [&](int o, int i) {
    if (m.type == WType::kI4) return I4Value(m, o, i);
    if (m.layout == Layout::kDotChunks) {
      return static_cast<float>(m.chunks.data()[I8DotAt(m.cols, o, i)] - 128) * m.scale[o];
    }
    const int64_t at = m.layout == Layout::kRows
                           ? static_cast<int64_t>(o) * m.cols + i
                           : PanelIndex(m.geometry(), m.type == WType::kBF16, o, i);
    switch (m.type) {
      case WType::kF32:
        return m.f32.data()[at];
      case WType::kBF16:
        return BF16ToF32(m.bf16.data()[at]);
      case WType::kI8:
        return static_cast<float>(m.i8.data()[at]) * m.scale[o];
      case WType::kI4:
        break;  // above
    }
    return 0.0f;
  };
  for (int o = 0; o < m.rows; ++o) {
    for (int i = 0; i < m.cols; ++i) out[static_cast<size_t>(o) * m.cols + i] = value(o, i);
  }
  return out;
}

Matrix MakeMatrix(const TensorView& t, bool transposed, WType type, Layout layout) {
  Matrix m;
  m.type = type;
  m.layout = layout;
  const int64_t d0 = t.shape[0], d1 = t.shape[1];
  m.rows = static_cast<int>(transposed ? d1 : d0);
  m.cols = static_cast<int>(transposed ? d0 : d1);
  const size_t n = static_cast<size_t>(d0 * d1);
  if (layout == Layout::kRows && !transposed && t.dtype == DType::kF32 && type == WType::kF32) {
    m.f32.Resize(n);
    std::memcpy(m.f32.data(), t.data, n * 4);
    return m;
  }
  if (layout == Layout::kRows && !transposed && t.dtype == DType::kBF16 && type == WType::kBF16) {
    m.bf16.Resize(n);
    std::memcpy(m.bf16.data(), t.data, n * 2);
    return m;
  }
  std::vector<float> src(n);
  ConvertToF32(t.dtype, t.data, n, src.data());
  auto at = [&](int o, int i) {
    return transposed ? src[static_cast<size_t>(i) * m.rows + o]
                      : src[static_cast<size_t>(o) * m.cols + i];
  };
  if (type == WType::kI8) {
    m.scale.resize(m.rows);
    for (int o = 0; o < m.rows; ++o) {
      float amax = 0;
      for (int i = 0; i < m.cols; ++i) amax = std::max(amax, std::abs(at(o, i)));
      m.scale[o] = amax > 0 ? amax / 127.0f : 1.0f;
    }
  }
  auto to_f32 = [](int, float v) { return v; };
  auto to_bf16 = [](int, float v) { return F32ToBF16(v); };
  auto to_i8 = [&](int o, float v) {
    return static_cast<int8_t>(Level(v / m.scale[o], -127, 127));
  };
  if (layout != Layout::kRows) {
    const PanelGeometry g = m.geometry();
    switch (type) {
      case WType::kF32:
        PackPanels(m.rows, m.cols, g, at, to_f32, &m.f32);
        break;
      case WType::kBF16:
        PackPanels(m.rows, m.cols, g, at, to_bf16, &m.bf16);
        break;
      case WType::kI8:
        if (layout == Layout::kDotChunks) {
          PackDotChunks(m.rows, m.cols, at, to_i8, &m.chunks);
        } else {
          PackPanels(m.rows, m.cols, g, at, to_i8, &m.i8);
        }
        break;
      case WType::kI4:
        PackI4(m.rows, m.cols, layout, m.bytes(), at, &m.chunks);
        break;
    }
    return m;
  }
  // Row-major (a row gather such as the embedding table): f32 or bf16.
  if (type == WType::kF32) m.f32.Resize(n);
  if (type == WType::kBF16) m.bf16.Resize(n);
  for (int o = 0; o < m.rows; ++o) {
    for (int i = 0; i < m.cols; ++i) {
      const size_t k = static_cast<size_t>(o) * m.cols + i;
      if (type == WType::kF32) m.f32.data()[k] = at(o, i);
      if (type == WType::kBF16) m.bf16.data()[k] = F32ToBF16(at(o, i));
    }
  }
  return m;
}

namespace {

// Runs f(p0, p1) over the matrix's panels in tasks of whole panels, in multiples of 4 (the
// few-rows kernel takes 4 at a time): about 8 per thread for balance, but never so small that
// scheduling costs show.
template <typename F>
void ForPanelRuns(ThreadPool* pool, const Matrix& w, F&& f) {
  const int panels = w.panels();
  const int64_t panel_bytes = std::max<int64_t>(w.bytes() / panels, 1);
  const int min_chunk = static_cast<int>(std::max<int64_t>(1, 32 * 1024 / panel_bytes));
  int chunk = std::max(min_chunk, (panels + 8 * pool->size() - 1) / (8 * pool->size()));
  chunk = (chunk + 3) & ~3;
  const int64_t tasks = (panels + chunk - 1) / chunk;
  pool->ParallelFor(tasks, [&](int64_t t, int) {
    const int p0 = static_cast<int>(t * chunk);
    f(p0, std::min(panels, p0 + chunk));
  });
}

}  // namespace

void LinearRunner::ListNonzero(int in, const float* x, int64_t ldx, int rows) {
  nonzero_.clear();
  sparse_counts_.inputs += in;
  for (int i = 0; i < in; ++i) {
    bool any = false;
    for (int b = 0; b < rows; ++b) any |= x[b * ldx + i] != 0.0f;
    if (any) nonzero_.push_back(i);
  }
}

void LinearRunner::ListNonzeroQuantised(int in, int r0, int rows) {
  nonzero_.clear();
  sparse_counts_.inputs += in;
  const int64_t ldq = int64_t{(in + kI4Group - 1) / kI4Group} * kI4Group;
  const int8_t* xq = xq_.data() + r0 * ldq;
  for (int i = 0; i < in; ++i) {
    bool any = false;
    for (int b = 0; b < rows; ++b) any |= xq[b * ldq + i] != 0;
    if (any) nonzero_.push_back(i);
  }
}

void LinearRunner::QuantizeX(int in, const float* x, int64_t ldx, int rows) {
  const int groups = (in + kI4Group - 1) / kI4Group;
  const size_t n = static_cast<size_t>(rows) * groups;
  if (xq_.size() < n * kI4Group) xq_.Resize(n * kI4Group);
  if (xscale_.size() < n) xscale_.Resize(n);
  if (xsum_.size() < n) xsum_.resize(n);
  QuantizeRowsI4(x, ldx, rows, in, xq_.data(), xscale_.data(), xsum_.data());
}

void LinearRunner::RunSkippingZeros(const Matrix& w, const Matrix& input_major, const float* x,
                                    int64_t ldx, int rows, float* y, int64_t ldy, bool accumulate) {
  if (rows <= 0 || w.rows == 0) return;
  if (rows > kSparseMaxRows) return Run(w, x, ldx, rows, y, ldy, accumulate);
  if (w.type == WType::kI4) {  // zeros of x as rounded to int8: I4Gemm's own input
    QuantizeX(w.cols, x, ldx, rows);
    ListNonzeroQuantised(w.cols, 0, rows);
    if (static_cast<double>(nonzero_.size()) > kSparseMaxDensityI4 * w.cols) {
      sparse_counts_.read += w.cols;
      return RunDot(w, rows, y, ldy, accumulate);
    }
    return RunSparseI4(input_major, 0, rows, y, ldy, accumulate);
  }
  ListNonzero(w.cols, x, ldx, rows);
  if (static_cast<double>(nonzero_.size()) > kSparseMaxDensity * w.cols) {
    sparse_counts_.read += w.cols;
    return Run(w, x, ldx, rows, y, ldy, accumulate);
  }
  RunSparse(input_major, x, ldx, rows, y, ldy, accumulate);
}

void LinearRunner::RunSparse(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                             int64_t ldy, bool accumulate) {
  // One run of whole column groups per thread: each listed input's row is read as one stream
  // per thread, as long as the work allows.
  const int panels = w.panels();
  const int tasks = std::min(panels, pool_->size());
  const int chunk = (panels + tasks - 1) / tasks;
  if (static_cast<int>(sparse_acc_.size()) < pool_->size()) sparse_acc_.resize(pool_->size());
  const int64_t ld = w.geometry().row_stride;
  sparse_counts_.read += static_cast<int64_t>(nonzero_.size());
  pool_->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int p0 = static_cast<int>(t * chunk);
    const int p1 = std::min(panels, p0 + chunk);
    if (p0 >= p1) return;
    AlignedBuffer<float>& acc = sparse_acc_[thread];
    const size_t need = static_cast<size_t>(rows) * (p1 - p0) * kPanelCols;
    if (acc.size() < need) acc.Resize(need);
    SparseRowsGemm(w.type, w.data(), w.scale.empty() ? nullptr : w.scale.data(), w.rows, ld, p0, p1,
                   x, ldx, rows, nonzero_.data(), static_cast<int>(nonzero_.size()), y, ldy,
                   accumulate, acc.data());
  });
}

void LinearRunner::RunSparseI4(const Matrix& w, int r0, int rows, float* y, int64_t ldy,
                               bool accumulate) {
  // As RunSparse, in 64-column blocks (the int4 rows' unit).
  const int blocks = (w.rows + kI4RowCols - 1) / kI4RowCols;
  const int tasks = std::min(blocks, pool_->size());
  const int chunk = (blocks + tasks - 1) / tasks;
  if (static_cast<int>(sparse_acc_.size()) < pool_->size()) sparse_acc_.resize(pool_->size());
  const int groups = (w.cols + kI4Group - 1) / kI4Group;
  const int64_t at = int64_t{r0} * groups;
  sparse_counts_.read += static_cast<int64_t>(nonzero_.size());
  pool_->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int k0 = static_cast<int>(t * chunk);
    const int k1 = std::min(blocks, k0 + chunk);
    if (k0 >= k1) return;
    const size_t need = static_cast<size_t>(rows) * (k1 - k0) * kI4RowCols;
    if (sparse_acc_[thread].size() < need) sparse_acc_[thread].Resize(need);
    SparseI4Gemm(w.data(), w.cols, w.rows, k0, k1, xq_.data() + at * kI4Group, xscale_.data() + at,
                 xsum_.data() + at, rows, nonzero_.data(), static_cast<int>(nonzero_.size()), y,
                 ldy, accumulate, sparse_acc_[thread].data());
  });
}

void LinearRunner::RunDot(const Matrix& w, int rows, float* y, int64_t ldy, bool accumulate) {
  // Interleaved once here, not once per panel run (8 per thread).
  const int32_t* xi = nullptr;
  if (rows > 1) {
    const auto words = static_cast<size_t>(InterleavedRowsI4Words(rows, w.cols));
    if (xi_.size() < words) xi_.Resize(words);
    InterleaveRowsI4(xq_.data(), rows, w.cols, xi_.data());
    xi = xi_.data();
  }
  ForPanelRuns(pool_, w, [&](int p0, int p1) {
    if (w.type == WType::kI4) {
      I4Gemm(w.data(), w.cols, w.rows, p0, p1, xq_.data(), xscale_.data(), xsum_.data(), rows, y,
             ldy, accumulate, xi);
    } else {
      I8DotGemm(w.data(), w.scale.data(), w.cols, w.rows, p0, p1, xq_.data(), xscale_.data(),
                xsum_.data(), rows, y, ldy, accumulate, xi);
    }
  });
}

void LinearRunner::Run(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                       int64_t ldy, bool accumulate) {
  if (rows <= 0 || w.rows == 0) return;
  if (w.layout == Layout::kInputRows && w.type == WType::kI4) {
    // Only the sparse kernel reads this layout: any number of rows, kSparseMaxRows at a time.
    QuantizeX(w.cols, x, ldx, rows);
    for (int r = 0; r < rows; r += kSparseMaxRows) {
      const int n = std::min(kSparseMaxRows, rows - r);
      ListNonzeroQuantised(w.cols, r, n);
      RunSparseI4(w, r, n, y + r * ldy, ldy, accumulate);
    }
    return;
  }
  if (w.layout == Layout::kInputRows && rows <= kSparseMaxRows) {
    ListNonzero(w.cols, x, ldx, rows);
    return RunSparse(w, x, ldx, rows, y, ldy, accumulate);
  }
  // The integer products (int4, int8 kDotChunks) take x rounded to int8 by group.
  if (w.type == WType::kI4 || w.layout == Layout::kDotChunks) {
    QuantizeX(w.cols, x, ldx, rows);
    return RunDot(w, rows, y, ldy, accumulate);
  }
  const size_t packed = static_cast<size_t>(rows) * w.cols;
  if (xpack_.size() < packed) xpack_.Resize(packed);
  PackRows(x, ldx, rows, w.cols, xpack_.data());
  ForPanelRuns(pool_, w, [&](int p0, int p1) {
    PanelGemm(w.type, w.data(), w.scale.empty() ? nullptr : w.scale.data(), w.cols, w.rows,
              w.geometry(), p0, p1, xpack_.data(), rows, y, ldy, accumulate);
  });
}

}  // namespace modrwkv::cpu

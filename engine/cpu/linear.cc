#include "engine/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

namespace modrwkv::cpu {
namespace {

// Packs W[o][i] = at(o, i) into the panel layout of kernels.h.
template <typename T, typename At, typename Conv>
void PackPanels(int rows, int cols, At at, Conv conv, AlignedBuffer<T>* dst) {
  const int panels = (rows + kPanelCols - 1) / kPanelCols;
  const int64_t stride = static_cast<int64_t>(cols) * kPanelCols;
  dst->Resize(static_cast<size_t>(panels * stride));
  std::memset(dst->data(), 0, dst->size() * sizeof(T));
  for (int p = 0; p < panels; ++p) {
    T* panel = dst->data() + p * stride;
    for (int c = 0; c < kPanelCols && p * kPanelCols + c < rows; ++c) {
      // bf16 pairs column c with column c + 16 in one 32-bit word.
      const int slot = sizeof(T) == 2 ? 2 * (c % 16) + c / 16 : c;
      const int o = p * kPanelCols + c;
      for (int i = 0; i < cols; ++i)
        panel[static_cast<int64_t>(i) * kPanelCols + slot] = conv(o, at(o, i));
    }
  }
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

std::vector<float> UnpackMatrix(const Matrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows) * m.cols);
  auto value = [&](int64_t at, int o) {
    switch (m.type) {
      case WType::kF32:
        return m.f32.data()[at];
      case WType::kBF16:
        return BF16ToF32(m.bf16.data()[at]);
      case WType::kI8:
        return static_cast<float>(m.i8.data()[at]) * m.scale[o];
    }
    return 0.0f;
  };
  const int64_t stride = static_cast<int64_t>(m.cols) * kPanelCols;
  for (int o = 0; o < m.rows; ++o) {
    const int p = o / kPanelCols, c = o % kPanelCols;
    const int slot = m.type == WType::kBF16 ? 2 * (c % 16) + c / 16 : c;  // as PackPanels
    for (int i = 0; i < m.cols; ++i) {
      const int64_t at = m.layout == Layout::kRows
                             ? static_cast<int64_t>(o) * m.cols + i
                             : p * stride + static_cast<int64_t>(i) * kPanelCols + slot;
      out[static_cast<size_t>(o) * m.cols + i] = value(at, o);
    }
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
    return static_cast<int8_t>(std::clamp(std::nearbyint(v / m.scale[o]), -127.0f, 127.0f));
  };
  if (layout == Layout::kPanels) {
    switch (type) {
      case WType::kF32:
        PackPanels(m.rows, m.cols, at, to_f32, &m.f32);
        break;
      case WType::kBF16:
        PackPanels(m.rows, m.cols, at, to_bf16, &m.bf16);
        break;
      case WType::kI8:
        PackPanels(m.rows, m.cols, at, to_i8, &m.i8);
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

void LinearRunner::Run(const Matrix& w, const float* x, int64_t ldx, int rows, float* y,
                       int64_t ldy, bool accumulate) {
  if (rows <= 0 || w.rows == 0) return;
  const size_t packed = static_cast<size_t>(rows) * w.cols;
  if (xpack_.size() < packed) xpack_.Resize(packed);
  PackRows(x, ldx, rows, w.cols, xpack_.data());
  // Tasks are runs of whole panels, in multiples of 4 (the few-rows kernel takes 4 at a time):
  // about 8 per thread for balance, but never so small that scheduling costs show.
  const int panels = w.panels();
  const int64_t panel_bytes = std::max<int64_t>(w.bytes() / panels, 1);
  const int min_chunk = static_cast<int>(std::max<int64_t>(1, 32 * 1024 / panel_bytes));
  int chunk = std::max(min_chunk, (panels + 8 * pool_->size() - 1) / (8 * pool_->size()));
  chunk = (chunk + 3) & ~3;
  const int64_t tasks = (panels + chunk - 1) / chunk;
  pool_->ParallelFor(tasks, [&](int64_t t, int) {
    const int p0 = static_cast<int>(t * chunk);
    const int p1 = std::min(panels, p0 + chunk);
    PanelGemm(w.type, w.data(), w.scale.empty() ? nullptr : w.scale.data(), w.cols, w.rows, p0, p1,
              xpack_.data(), rows, y, ldy, accumulate);
  });
}

}  // namespace modrwkv::cpu

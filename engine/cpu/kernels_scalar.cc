// Portable reference kernels: the oracle the SIMD versions are tested against.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::cpu::scalar {
namespace {

// Weight (input i, column c) of the panel starting at element `base`, its input rows
// `row_stride` elements apart (see kernels.h).
inline float PanelWeight(WType wt, const void* w, int64_t base, int64_t row_stride, int i, int c) {
  const int64_t idx = base + static_cast<int64_t>(i) * row_stride;
  if (wt == WType::kF32) return static_cast<const float*>(w)[idx + c];
  if (wt == WType::kI8) return static_cast<float>(static_cast<const int8_t*>(w)[idx + c]);
  // bf16: word j holds column j (low half) and column j + 16 (high half).
  return BF16ToF32(static_cast<const uint16_t*>(w)[idx + 2 * (c % 16) + c / 16]);
}

// The bf16 word at p (an int4 scale), widened.
inline float ScaleAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return BF16ToF32(h);
}

// What a finished sum s of output o makes of its destination (PanelGemm's epilogue).
inline void Store(WType wt, float s, const float* col_scale, int o, bool accumulate, float& dst) {
  if (wt == WType::kI8) {
    dst = accumulate ? std::fma(s, col_scale[o], dst) : s * col_scale[o];
  } else {
    dst = accumulate ? dst + s : s;
  }
}

}  // namespace

void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  // Where row b sits in the packed x: its tile's block and its index in the tile.
  std::vector<const float*> xrow(rows);
  std::vector<int> stride(rows);
  for (int t = 0, r = 0; t < RowTiles(rows); ++t) {
    const int mr = RowTileSize(rows, t);
    for (int b = 0; b < mr; ++b)
      xrow[r + b] = xp + static_cast<int64_t>(r) * in + b, stride[r + b] = mr;
    r += mr;
  }
  for (int p = p0; p < p1; ++p) {
    for (int c = 0; c < kPanelCols && p * kPanelCols + c < out; ++c) {
      const int o = p * kPanelCols + c;
      for (int b = 0; b < rows; ++b) {
        float s = 0;
        for (int i = 0; i < in; ++i) {
          s = std::fma(xrow[b][static_cast<int64_t>(i) * stride[b]],
                       PanelWeight(wt, w, p * g.panel_stride, g.row_stride, i, c), s);
        }
        Store(wt, s, col_scale, o, accumulate, y[b * ldy + o]);
      }
    }
  }
}

void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* /*acc*/) {
  for (int p = p0; p < p1; ++p) {
    for (int c = 0; c < kPanelCols && p * kPanelCols + c < out; ++c) {
      const int o = p * kPanelCols + c;
      for (int b = 0; b < rows; ++b) {
        float s = 0;
        for (int j = 0; j < n; ++j) {
          const int i = nonzero[j];
          s = std::fma(x[b * ldx + i], PanelWeight(wt, w, int64_t{p} * kPanelCols, ld, i, c), s);
        }
        Store(wt, s, col_scale, o, accumulate, y[b * ldy + o]);
      }
    }
  }
}

void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* /*xi*/) {
  const bool int4 = wt == WType::kI4;
  const int groups = (in + kI4Group - 1) / kI4Group;
  for (int p = p0; p < p1; ++p) {
    const uint8_t* panel =
        static_cast<const uint8_t*>(w) + p * (int4 ? I4PanelBytes(in) : I8DotPanelBytes(in));
    for (int c = 0; c < kPanelCols && p * kPanelCols + c < out; ++c) {
      for (int b = 0; b < rows; ++b) {
        float total = 0;
        for (int g = 0; g < groups; ++g) {
          const uint8_t* block = panel + int64_t{g} * (int4 ? kI4BlockBytes : kI8DotBlockBytes);
          const int64_t at = int64_t{b} * groups + g;
          int32_t dot = 0;
          for (int i = 0; i < kI4Group; ++i) {
            // int4: column c's nibble of chunk i / 4, after the block's scales; int8: its byte.
            const int q = int4 ? (block[2 * kPanelCols + 64 * (i / 4) + 4 * (c % 16) + i % 4] >>
                                  (c / 16 * 4)) &
                                     15
                               : block[128 * (i / 4) + 64 * (c / 16) + 4 * (c % 16) + i % 4];
            dot += xq[at * kI4Group + i] * q;
          }
          float scale = xscale[at];
          if (int4) scale = ScaleAt(block + 2 * (2 * (c % 16) + c / 16)) * xscale[at];
          total = std::fma(static_cast<float>(dot - (int4 ? 8 : 128) * xsum[at]), scale, total);
        }
        Store(int4 ? WType::kF32 : WType::kI8, total, col_scale, p * kPanelCols + c, accumulate,
              y[b * ldy + p * kPanelCols + c]);
      }
    }
  }
}

void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq, float* xscale,
                    int32_t* xsum) {
  const int groups = (in + kI4Group - 1) / kI4Group;
  for (int b = 0; b < rows; ++b) {
    for (int g = 0; g < groups; ++g) {
      const float* src = x + b * ldx + g * kI4Group;
      const int n = std::min(kI4Group, in - g * kI4Group);
      const int64_t at = int64_t{b} * groups + g;
      int8_t* q = xq + at * kI4Group;
      float amax = 0;
      bool finite = true;
      for (int i = 0; i < n; ++i) {
        amax = std::max(amax, std::abs(src[i]));
        finite &= std::isfinite(src[i]);
      }
      const I4XScale s = I4XScaleOf(amax, finite);
      // Adding and subtracting 1.5 * 2^23 rounds a float of magnitude below 2^22 to an integer,
      // half to even (the default rounding mode), in two vectorisable operations.
      constexpr float kRound = 12582912.0f;
      int32_t sum = 0;
      for (int i = 0; i < kI4Group; ++i) {
        // x * inv is within [-127, 127] up to rounding; the clamp keeps a rounding from
        // overflowing.
        const float v = i < n && s.inv != 0 ? (src[i] * s.inv + kRound) - kRound : 0.0f;
        q[i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
        sum += q[i];
      }
      xscale[at] = s.scale;
      xsum[at] = sum;
    }
  }
}

void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* /*acc*/) {
  const uint8_t* bytes = static_cast<const uint8_t*>(w);
  const int groups = (in + kI4Group - 1) / kI4Group;
  const int64_t words = I4ScaleRowWords(out), row_bytes = I4InputRowBytes(out);
  const uint8_t* input_rows = bytes + 2 * groups * words;
  for (int o = k0 * kI4RowCols; o < std::min(out, k1 * kI4RowCols); ++o) {
    const int pos = I4RowPosition(o % kI4RowCols);
    const int64_t byte = o / kI4RowCols * (kI4RowCols / 2) + pos % 32;
    for (int b = 0; b < rows; ++b) {
      float total = 0;
      int j = 0;
      for (int g = 0; g < groups; ++g) {
        const int64_t at = int64_t{b} * groups + g;
        // A group with no listed input adds 0 to the total: no bit changes unless x is NaN.
        if ((j == n || nonzero[j] >= (g + 1) * kI4Group) && std::isfinite(xscale[at])) continue;
        int32_t dot = 0;
        for (; j < n && nonzero[j] < (g + 1) * kI4Group; ++j) {
          const int i = nonzero[j];
          const int q = (input_rows[i * row_bytes + byte] >> (pos / 32 * 4)) & 15;
          dot += xq[int64_t{b} * groups * kI4Group + i] * q;
        }
        const float scale = ScaleAt(bytes + 2 * (g * words + o)) * xscale[at];
        total = std::fma(static_cast<float>(dot - 8 * xsum[at]), scale, total);
      }
      float& dst = y[b * ldy + o];
      dst = accumulate ? dst + total : total;
    }
  }
}

void VecExp(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

void VecSigmoid(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void VecReluSquare(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = x[i] > 0.0f ? x[i] : 0.0f;
    x[i] = t * t;
  }
}

void VecTanh(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy) {
  constexpr int N = 64;
  for (int t = 0; t < T; ++t) {
    const float* rt = r + t * ld;
    const float* wt = w + t * ld;
    const float* kt = k + t * ld;
    const float* vt = v + t * ld;
    const float* kkt = kk + t * ld;
    const float* at = a + t * ld;
    float* yt = y + t * ldy;
    for (int i = 0; i < N; ++i) {
      float* s = state + i * N;
      float sa = 0;
      for (int j = 0; j < N; ++j) sa -= s[j] * kkt[j];
      float acc = 0;
      for (int j = 0; j < N; ++j) {
        s[j] = s[j] * wt[j] + sa * (kkt[j] * at[j]) + vt[i] * kt[j];
        acc += s[j] * rt[j];
      }
      yt[i] = acc;
    }
  }
}

float SumFloats(const float* x, int64_t n, bool /*prefetch*/) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += x[i + j];
  for (; i < n; ++i) s[0] += x[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out) {
  float mean = 0;
  for (int i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<float>(n);
  float var = 0;
  for (int i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    var += d * d;
  }
  var /= static_cast<float>(n);
  const float inv = 1.0f / std::sqrt(var + eps);
  for (int i = 0; i < n; ++i) out[i] = (x[i] - mean) * inv * weight[i] + bias[i];
}

}  // namespace modrwkv::cpu::scalar

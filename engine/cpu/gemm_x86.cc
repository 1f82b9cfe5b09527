// AVX-512 and AVX2 versions of PanelGemm (engine/cpu/kernels.h): an outer-product kernel over
// weights packed in column panels. Per input index i it loads one row of a panel (32 weights)
// and multiplies it by x[b][i] broadcast, for every row b of the tile: no horizontal reductions,
// and each output stays a single fused multiply-add chain over i in order.
#if defined(__x86_64__)

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cpu/kernels_x86.h"
#include "engine/cpu/x86_simd.h"

namespace modrwkv::cpu {
namespace {

static_assert(kPanelCols == 32, "the loaders below assume 32-column panels");

// xp: the tile's packed rows, xp[i*ldxp + b].
template <typename T>
using TileFn = void (*)(const T* w, int64_t panel_stride, int64_t row_stride, int in,
                        const float* scale, const float* xp, int ldxp, float* y, int64_t ldy,
                        int cols, bool accumulate, const char* prefetch, int64_t prefetch_lines);

constexpr int64_t kLine = 64;

// Calls f with the weights as a pointer of their element type.
template <typename F>
void WithWeights(WType wt, const void* w, F&& f) {
  switch (wt) {
    case WType::kF32:
      return f(static_cast<const float*>(w));
    case WType::kBF16:
      return f(static_cast<const uint16_t*>(w));
    case WType::kI8:
      return f(static_cast<const int8_t*>(w));
    case WType::kI4:  // I4Gemm's
      return;
  }
}
// Software prefetch distance of the streaming (few-rows) kernel, in bytes of each stream of
// packed panels (in input rows of any layout: the same rows ahead).
constexpr int64_t kStreamAhead = 4096;
template <typename T>
constexpr int64_t kRowsAhead = kStreamAhead / (kPanelCols * sizeof(T));
// Whether the streaming kernel requests its packed streams ahead: only for int8, whose few-row
// tile is bound by widening the bytes (21 GB/s at one row against the memory's 25-28) and gains
// from the requests at 2-3 rows (2-5%). f32 and bf16 keep up with the memory, and the hardware
// prefetcher alone streams them 1.13-1.27x faster at 1-3 rows (linear_bench, the two forms
// alternated in one process; docs/benchmarks.md, "Few-row products without software prefetch").
template <typename T>
constexpr bool kPrefetchStreams = std::is_same_v<T, int8_t>;

}  // namespace

namespace avx512 {
namespace {

// One input row of a panel as two vectors of 16 f32 columns (0-15 and 16-31).
MODRWKV_AVX512 inline void LoadPanelRow(const float* p, __m512& lo, __m512& hi) {
  lo = _mm512_loadu_ps(p);
  hi = _mm512_loadu_ps(p + 16);
}
MODRWKV_AVX512 inline void LoadPanelRow(const uint16_t* p, __m512& lo, __m512& hi) {
  // Word j holds column j in its low half and column j + 16 in its high half.
  const __m512i v = _mm512_loadu_si512(p);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
MODRWKV_AVX512 inline void LoadPanelRow(const int8_t* p, __m512& lo, __m512& hi) {
  lo = _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  hi = _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
}

// A tile's epilogue: y[b][c] (=|+=) s_c * sums[b * ld + c] for b < mr, c < min(width, cols),
// s_c = scale[c] for int8 weights and 1 otherwise.
template <typename T>
MODRWKV_AVX512 void StoreSums(int mr, int width, const float* sums, int64_t ld, int cols,
                              const float* scale, float* y, int64_t ldy, bool accumulate) {
  for (int c0 = 0; c0 < std::min(width, cols); c0 += 16) {
    const __mmask16 m =
        cols - c0 >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (cols - c0)) - 1);
    __m512 s_col = _mm512_setzero_ps();
    if constexpr (sizeof(T) == 1) s_col = _mm512_maskz_loadu_ps(m, scale + c0);
    for (int b = 0; b < mr; ++b) {
      float* out = y + b * ldy + c0;
      __m512 s = _mm512_loadu_ps(sums + b * ld + c0);
      if constexpr (sizeof(T) == 1) {
        s = accumulate ? _mm512_fmadd_ps(s, s_col, _mm512_maskz_loadu_ps(m, out))
                       : _mm512_mul_ps(s, s_col);
      } else if (accumulate) {
        s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out), s);
      }
      _mm512_mask_storeu_ps(out, m, s);
    }
  }
}

// MR rows of x times NP adjacent panels; `cols` output columns are valid (the last panel may be
// padding past the matrix's edge). Spread over the pass, `prefetch_lines` cache lines from
// `prefetch` on are requested into L2: part of the next panel, so that its read from memory
// overlaps this panel's arithmetic instead of stalling the first tile that touches it.
template <typename T, int MR, int NP>
MODRWKV_AVX512 void Tile(const T* w, int64_t panel_stride, int64_t row_stride, int in,
                         const float* scale, const float* xp, int ldxp, float* y, int64_t ldy,
                         int cols, bool accumulate, const char* prefetch, int64_t prefetch_lines) {
  __m512 acc[MR][2 * NP];
  for (int b = 0; b < MR; ++b)
    for (int v = 0; v < 2 * NP; ++v) acc[b][v] = _mm512_setzero_ps();
  int64_t due = 0;  // prefetch_lines / in per iteration, in integer steps
#pragma GCC unroll 2
  for (int i = 0; i < in; ++i) {
    for (due += prefetch_lines; due >= in; due -= in, prefetch += kLine) {
      _mm_prefetch(prefetch, _MM_HINT_T1);
    }
    for (int p = 0; p < NP; ++p) {
      const T* row = w + p * panel_stride + static_cast<int64_t>(i) * row_stride;
      // Input-major panels (rows apart, which the hardware does not follow), and int8's packed
      // streams (kPrefetchStreams): request each stream kRowsAhead rows ahead.
      if (row_stride != kPanelCols || (NP > 1 && kPrefetchStreams<T>)) {
        const char* ahead = reinterpret_cast<const char*>(row + kRowsAhead<T> * row_stride);
        for (int64_t l = 0; l < kPanelCols * static_cast<int64_t>(sizeof(T)); l += kLine) {
          _mm_prefetch(ahead + l, _MM_HINT_T0);
        }
      }
      __m512 lo, hi;
      LoadPanelRow(row, lo, hi);
      for (int b = 0; b < MR; ++b) {
        const __m512 xb = _mm512_set1_ps(xp[static_cast<int64_t>(i) * ldxp + b]);
        acc[b][2 * p] = _mm512_fmadd_ps(xb, lo, acc[b][2 * p]);
        acc[b][2 * p + 1] = _mm512_fmadd_ps(xb, hi, acc[b][2 * p + 1]);
      }
    }
  }
  alignas(64) float sums[MR][2 * NP * 16];
  for (int b = 0; b < MR; ++b)
    for (int v = 0; v < 2 * NP; ++v) _mm512_store_ps(sums[b] + 16 * v, acc[b][v]);
  StoreSums<T>(MR, 2 * NP * 16, &sums[0][0], 2 * NP * 16, cols, scale, y, ldy, accumulate);
}

template <typename T, int NP, int... I>
constexpr std::array<TileFn<T>, sizeof...(I)> MakeTiles(std::integer_sequence<int, I...>) {
  return {&Tile<T, I + 1, NP>...};
}

template <typename T>
MODRWKV_AVX512 void PanelGemmT(const T* w, const float* scale, int in, int out, PanelGeometry g,
                               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy,
                               bool accumulate) {
  // One panel holds 2 vectors of outputs per row: 4..12 rows keep 8..24 chains in flight. Below
  // 4 rows, 4 panels at once do (decode: one pass over each weight, four streams).
  static constexpr auto kOne = MakeTiles<T, 1>(std::make_integer_sequence<int, kMaxTileRows>());
  static constexpr auto kFour = MakeTiles<T, 4>(std::make_integer_sequence<int, 3>());
  const int64_t ps = g.panel_stride, rs = g.row_stride;
  const bool packed = rs == kPanelCols;
  auto at = [&](int p) {
    return std::pair{scale ? scale + p * kPanelCols : nullptr, out - p * kPanelCols};
  };
  if (rows < 4) {
    // One pass over each weight: the hardware prefetcher follows the four streams.
    int p = p0;
    for (; p + 4 <= p1; p += 4) {
      auto [s, cols] = at(p);
      kFour[rows - 1](w + p * ps, ps, rs, in, s, xp, rows, y + p * kPanelCols, ldy, cols,
                      accumulate, nullptr, 0);
    }
    for (; p < p1; ++p) {
      auto [s, cols] = at(p);
      kOne[rows - 1](w + p * ps, ps, rs, in, s, xp, rows, y + p * kPanelCols, ldy, cols, accumulate,
                     nullptr, 0);
    }
    return;
  }
  const int tiles = RowTiles(rows);
  // Several tiles per panel: the first reads the panel from memory, the others from cache. Each
  // tile prefetches its share of the next packed panel, so memory reads run under all of the
  // tiles (input-major panels are not contiguous: their tiles request their rows ahead).
  const int64_t panel_lines = ps * static_cast<int64_t>(sizeof(T)) / kLine;
  for (int p = p0; p < p1; ++p) {
    auto [s, cols] = at(p);
    const char* next =
        packed && p + 1 < p1 ? reinterpret_cast<const char*>(w + (p + 1) * ps) : nullptr;
    int r = 0;
    for (int t = 0; t < tiles; ++t) {
      const int mr = RowTileSize(rows, t);
      const int64_t l0 = panel_lines * t / tiles, l1 = panel_lines * (t + 1) / tiles;
      kOne[mr - 1](w + p * ps, ps, rs, in, s, xp + static_cast<int64_t>(r) * in, mr,
                   y + r * ldy + p * kPanelCols, ldy, cols, accumulate,
                   next ? next + l0 * kLine : nullptr, next ? l1 - l0 : 0);
      r += mr;
    }
  }
}

// SparseRowsGemm (kernels.h) for MR rows: Q listed inputs at a time, each its own stream across
// the column groups, the sums of the MR x (p1 - p0) x 32 outputs kept in `acc` (L1) between
// passes. The rows of the inputs kAhead places further on are requested group by group.
template <typename T, int MR, int Q>
MODRWKV_AVX512 void SparsePass(const T* base, int64_t ld, int groups, const float* x, int64_t ldx,
                               const int32_t* nz, const int32_t* ahead, float* acc) {
  const int64_t width = int64_t{groups} * kPanelCols;
  const T* row[Q];
  const char* pre[Q];
  __m512 xb[MR][Q];
  for (int q = 0; q < Q; ++q) {
    row[q] = base + nz[q] * ld;
    pre[q] = ahead ? reinterpret_cast<const char*>(base + ahead[q] * ld) : nullptr;
    for (int b = 0; b < MR; ++b) xb[b][q] = _mm512_set1_ps(x[b * ldx + nz[q]]);
  }
  for (int g = 0; g < groups; ++g) {
    __m512 lo[Q], hi[Q];
    for (int q = 0; q < Q; ++q) {
      if (pre[q]) _mm_prefetch(pre[q] + g * kPanelCols * sizeof(T), _MM_HINT_T0);
      if (pre[q] && sizeof(T) == 4) {
        _mm_prefetch(pre[q] + g * kPanelCols * sizeof(T) + kLine, _MM_HINT_T0);
      }
      LoadPanelRow(row[q] + g * kPanelCols, lo[q], hi[q]);
    }
    for (int b = 0; b < MR; ++b) {
      float* a = acc + b * width + g * kPanelCols;
      __m512 al = _mm512_loadu_ps(a), ah = _mm512_loadu_ps(a + 16);
      for (int q = 0; q < Q; ++q) {  // in input order: one chain per output
        al = _mm512_fmadd_ps(xb[b][q], lo[q], al);
        ah = _mm512_fmadd_ps(xb[b][q], hi[q], ah);
      }
      _mm512_storeu_ps(a, al);
      _mm512_storeu_ps(a + 16, ah);
    }
  }
}

template <typename T, int MR>
MODRWKV_AVX512 void SparseRows(const T* w, const float* scale, int out, int64_t ld, int p0, int p1,
                               const float* x, int64_t ldx, const int32_t* nz, int n, float* y,
                               int64_t ldy, bool accumulate, float* acc) {
  constexpr int kQ = 8, kAhead = 2 * kQ;
  const int groups = p1 - p0;
  const int64_t width = int64_t{groups} * kPanelCols;
  std::fill(acc, acc + MR * width, 0.0f);
  const T* base = w + int64_t{p0} * kPanelCols;
  int j = 0;
  for (; j + kQ <= n; j += kQ) {
    const int32_t* ahead = j + kAhead + kQ <= n ? nz + j + kAhead : nullptr;
    SparsePass<T, MR, kQ>(base, ld, groups, x, ldx, nz + j, ahead, acc);
  }
  for (; j < n; ++j) SparsePass<T, MR, 1>(base, ld, groups, x, ldx, nz + j, nullptr, acc);
  const int c0 = p0 * kPanelCols;
  StoreSums<T>(MR, static_cast<int>(width), acc, width, out - c0, scale ? scale + c0 : nullptr,
               y + c0, ldy, accumulate);
}

// The integer-product panels (kernels.h): int4 nibbles with a bf16 scale per column and group
// inside each block, and int8 bytes offset by 128 with a scale per column outside the panels.
// Load gives a chunk's two operands, columns 0-15 and 16-31, each 16 columns x 4 inputs.
struct Int4Chunks {
  static constexpr int kBlockBytes = kI4BlockBytes, kOffset = 8;
  static constexpr bool kGroupScales = true;
  using Epilogue = float;  // StoreSums: no column scale
  MODRWKV_AVX512_VNNI static void Load(const uint8_t* block, int k, __m512i& lo, __m512i& hi) {
    const __m512i v = _mm512_loadu_si512(block + 2 * kPanelCols + 64 * k);
    const __m512i low = _mm512_set1_epi8(0x0F);
    lo = _mm512_and_si512(v, low);
    hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
  }
};
struct Int8Chunks {
  static constexpr int kBlockBytes = kI8DotBlockBytes, kOffset = 128;
  static constexpr bool kGroupScales = false;
  using Epilogue = int8_t;  // StoreSums: times the column's scale
  MODRWKV_AVX512_VNNI static void Load(const uint8_t* block, int k, __m512i& lo, __m512i& hi) {
    lo = _mm512_loadu_si512(block + 128 * k);
    hi = _mm512_loadu_si512(block + 128 * k + 64);
  }
};

// I4Gemm / I8DotGemm (kernels.h) for MR rows of x and one panel. Per group: each row's sums
// start at minus the offset times the group's x sum; each row's next 4 rounded inputs, broadcast
// as one 32-bit value, against a chunk's two operands (vpdpbusd: 64 exact multiply-adds into 16
// int32 sums per instruction); then each sum, converted, times (the weights' group scale x) the
// x scale, into its output's total (one FMA). xi: the tile's rows interleaved by 4 inputs
// (DotGemm). `prefetch_lines` lines from `prefetch` on (part of the next panel) are requested
// into L2 over the pass, as Tile does.
//
// The unroll pragmas keep the 2 x MR sums in registers: without them GCC 12 kept the sums of a
// 12-row tile on the stack, storing one per multiply-add (a third of the VNNI rate).
template <typename Fmt, int MR>
MODRWKV_AVX512_VNNI void DotTile(const uint8_t* w, int groups, const int32_t* xi,
                                 const float* xscale, const int32_t* xsum, const float* scale,
                                 float* y, int64_t ldy, int cols, bool accumulate,
                                 const char* prefetch, int64_t prefetch_lines) {
  alignas(64) float total[MR][kPanelCols] = {};
  int64_t due = 0;  // prefetch_lines / groups per group, in integer groups
  for (int g = 0; g < groups; ++g) {
    for (due += prefetch_lines; due >= groups; due -= groups, prefetch += kLine) {
      _mm_prefetch(prefetch, _MM_HINT_T1);
    }
    const uint8_t* block = w + int64_t{g} * Fmt::kBlockBytes;
    // Each sum starts at minus the offset times the row's x sum: exact integers, the same sums.
    __m512i acc[MR][2];
#pragma GCC unroll 12
    for (int b = 0; b < MR; ++b) {
      acc[b][0] = acc[b][1] = _mm512_set1_epi32(-Fmt::kOffset * xsum[int64_t{b} * groups + g]);
    }
    const int32_t* xg = xi + int64_t{g} * (kI4Group / 4) * MR;
#pragma GCC unroll 8
    for (int k = 0; k < kI4Group / 4; ++k) {
      __m512i lo, hi;
      Fmt::Load(block, k, lo, hi);
#pragma GCC unroll 12
      for (int b = 0; b < MR; ++b) {
        const __m512i xb = _mm512_set1_epi32(xg[k * MR + b]);
        acc[b][0] = _mm512_dpbusd_epi32(acc[b][0], lo, xb);
        acc[b][1] = _mm512_dpbusd_epi32(acc[b][1], hi, xb);
      }
    }
    __m512 slo = _mm512_set1_ps(1.0f), shi = slo;
    if constexpr (Fmt::kGroupScales) {
      LoadPanelRow(reinterpret_cast<const uint16_t*>(block), slo, shi);
    }
#pragma GCC unroll 12
    for (int b = 0; b < MR; ++b) {
      const __m512 xs = _mm512_set1_ps(xscale[int64_t{b} * groups + g]);
      const __m512 s0 = Fmt::kGroupScales ? _mm512_mul_ps(slo, xs) : xs;
      const __m512 s1 = Fmt::kGroupScales ? _mm512_mul_ps(shi, xs) : xs;
      float* t = total[b];
      _mm512_store_ps(t, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][0]), s0, _mm512_load_ps(t)));
      _mm512_store_ps(t + 16,
                      _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][1]), s1, _mm512_load_ps(t + 16)));
    }
  }
  StoreSums<typename Fmt::Epilogue>(MR, kPanelCols, &total[0][0], kPanelCols, cols, scale, y, ldy,
                                    accumulate);
}

using DotTileFn = void (*)(const uint8_t*, int, const int32_t*, const float*, const int32_t*,
                           const float*, float*, int64_t, int, bool, const char*, int64_t);
template <typename Fmt, int... I>
constexpr std::array<DotTileFn, sizeof...(I)> MakeDotTiles(std::integer_sequence<int, I...>) {
  return {&DotTile<Fmt, I + 1>...};
}

// One panel at a time for every row count (tiles of up to 12 rows). Unlike PanelGemmT, no four
// panels at once below 4 rows: for int4 that measured 2.2x slower at one row than one stream
// (docs/benchmarks.md, "int4 weights" and its correction).
//
// From kPrefetchRows rows on, each tile requests its share of the next panel into L2, so the
// panel's read overlaps the tiles' arithmetic. Below, a tile is quick next to its panel's read
// and the hardware prefetcher alone streams the panels faster: without the requests, one row
// read int4's weights 1.18-1.26x faster, two rows 1.19-1.23x, and 6 to 12 rows 4-22% slower
// (linear_bench, the two forms alternated in one process; docs/benchmarks.md, "Few-row products
// without software prefetch").
constexpr int kPrefetchRows = 4;

template <typename Fmt>
void DotGemm(const uint8_t* w, const float* scale, int in, int out, int p0, int p1,
             const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
             int64_t ldy, bool accumulate, const int32_t* xi) {
  static constexpr auto kTiles = MakeDotTiles<Fmt>(std::make_integer_sequence<int, kMaxTileRows>());
  const int groups = (in + kI4Group - 1) / kI4Group;
  const int64_t ps = int64_t{groups} * Fmt::kBlockBytes, ldq = int64_t{groups} * kI4Group;
  const int tiles = RowTiles(rows);
  const int64_t panel_lines = ps / kLine;
  // The tiles read their rows' x interleaved (InterleaveRowsI4): made here unless the caller
  // made it once for all the panel runs of the product. One row is its own interleaving.
  thread_local std::vector<int32_t> interleaved;
  if (xi == nullptr) {
    xi = reinterpret_cast<const int32_t*>(xq);
    if (rows > 1) {
      interleaved.resize(static_cast<size_t>(InterleavedRowsI4Words(rows, in)));
      InterleaveRowsI4(xq, rows, in, interleaved.data());
      xi = interleaved.data();
    }
  }
  const int64_t steps = ldq / 4;
  for (int p = p0; p < p1; ++p) {
    const char* next = rows >= kPrefetchRows && p + 1 < p1
                           ? reinterpret_cast<const char*>(w + (p + 1) * ps)
                           : nullptr;
    int r = 0;
    for (int t = 0; t < tiles; ++t) {
      const int mr = RowTileSize(rows, t);
      const int64_t l0 = panel_lines * t / tiles, l1 = panel_lines * (t + 1) / tiles;
      kTiles[mr - 1](w + p * ps, groups, xi + r * steps, xscale + int64_t{r} * groups,
                     xsum + int64_t{r} * groups, scale ? scale + p * kPanelCols : nullptr,
                     y + r * ldy + p * kPanelCols, ldy, out - p * kPanelCols, accumulate,
                     next ? next + l0 * kLine : nullptr, next ? l1 - l0 : 0);
      r += mr;
    }
  }
}

}  // namespace

void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* xi) {
  const auto gemm = wt == WType::kI4 ? DotGemm<Int4Chunks> : DotGemm<Int8Chunks>;
  gemm(static_cast<const uint8_t*>(w), col_scale, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy,
       accumulate, xi);
}

void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  WithWeights(wt, w, [&](const auto* typed) {
    PanelGemmT(typed, col_scale, in, out, g, p0, p1, xp, rows, y, ldy, accumulate);
  });
}

void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc) {
  static_assert(kSparseMaxRows == 4);
  WithWeights(wt, w, [&](const auto* typed) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    static constexpr decltype(&SparseRows<T, 1>) kRows[] = {SparseRows<T, 1>, SparseRows<T, 2>,
                                                            SparseRows<T, 3>, SparseRows<T, 4>};
    kRows[rows - 1](typed, col_scale, out, ld, p0, p1, x, ldx, nonzero, n, y, ldy, accumulate, acc);
  });
}

}  // namespace avx512

namespace avx2 {
namespace {

constexpr int kTileRows = 3;  // 3 rows x 4 vectors = 12 accumulators of the 16 ymm registers

// One input row of a panel as four vectors of 8 f32 columns (0-7, 8-15, 16-23, 24-31).
MODRWKV_AVX2 inline void LoadPanelRow(const float* p, __m256 v[4]) {
  for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(p + 8 * k);
}
MODRWKV_AVX2 inline void LoadPanelRow(const uint16_t* p, __m256 v[4]) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
  v[1] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
  v[2] = _mm256_castsi256_ps(_mm256_and_si256(a, high));
  v[3] = _mm256_castsi256_ps(_mm256_and_si256(b, high));
}
MODRWKV_AVX2 inline void LoadPanelRow(const int8_t* p, __m256 v[4]) {
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * k))));
  }
}

template <typename T, int MR>
MODRWKV_AVX2 void Tile(const T* w, int64_t /*panel_stride*/, int64_t row_stride, int in,
                       const float* scale, const float* xp, int ldxp, float* y, int64_t ldy,
                       int cols, bool accumulate, const char* /*prefetch*/,
                       int64_t /*prefetch_lines*/) {
  __m256 acc[MR][4];
  for (int b = 0; b < MR; ++b)
    for (int v = 0; v < 4; ++v) acc[b][v] = _mm256_setzero_ps();
  for (int i = 0; i < in; ++i) {
    __m256 wv[4];
    LoadPanelRow(w + static_cast<int64_t>(i) * row_stride, wv);
    for (int b = 0; b < MR; ++b) {
      const __m256 xb = _mm256_set1_ps(xp[static_cast<int64_t>(i) * ldxp + b]);
      for (int v = 0; v < 4; ++v) acc[b][v] = _mm256_fmadd_ps(xb, wv[v], acc[b][v]);
    }
  }
  // Stores go through a scalar loop at the matrix's edge; the arithmetic is the same.
  for (int b = 0; b < MR; ++b) {
    alignas(32) float s[kPanelCols];
    for (int v = 0; v < 4; ++v) _mm256_store_ps(s + 8 * v, acc[b][v]);
    float* out = y + b * ldy;
    for (int c = 0; c < std::min(cols, kPanelCols); ++c) {
      if constexpr (sizeof(T) == 1) {
        out[c] = accumulate ? std::fma(s[c], scale[c], out[c]) : s[c] * scale[c];
      } else {
        out[c] = accumulate ? out[c] + s[c] : s[c];
      }
    }
  }
}

template <typename T, int... I>
constexpr std::array<TileFn<T>, sizeof...(I)> MakeTiles(std::integer_sequence<int, I...>) {
  return {&Tile<T, I + 1>...};
}

template <typename T>
MODRWKV_AVX2 void PanelGemmT(const T* w, const float* scale, int in, int out, PanelGeometry g,
                             int p0, int p1, const float* xp, int rows, float* y, int64_t ldy,
                             bool accumulate) {
  static constexpr auto kTiles = MakeTiles<T>(std::make_integer_sequence<int, kTileRows>());
  const int64_t ps = g.panel_stride;
  for (int p = p0; p < p1; ++p) {
    const float* s = scale ? scale + p * kPanelCols : nullptr;
    // Each packed tile of up to 12 rows runs as sub-tiles of up to 3.
    for (int t = 0, r = 0; t < RowTiles(rows); ++t) {
      const int mr = RowTileSize(rows, t);
      const float* tile = xp + static_cast<int64_t>(r) * in;
      for (int b = 0; b < mr; b += kTileRows) {
        const int n = std::min(kTileRows, mr - b);
        kTiles[n - 1](w + p * ps, ps, g.row_stride, in, s, tile + b, mr,
                      y + (r + b) * ldy + p * kPanelCols, ldy, out - p * kPanelCols, accumulate,
                      nullptr, 0);
      }
      r += mr;
    }
  }
}

// SparseRowsGemm (kernels.h), one row and one listed input at a time: the sums in `acc`.
template <typename T>
MODRWKV_AVX2 void SparseRows(const T* w, const float* scale, int out, int64_t ld, int p0, int p1,
                             const float* x, int64_t ldx, int rows, const int32_t* nz, int n,
                             float* y, int64_t ldy, bool accumulate, float* acc) {
  const int groups = p1 - p0;
  const int64_t width = int64_t{groups} * kPanelCols;
  std::fill(acc, acc + rows * width, 0.0f);
  const T* base = w + int64_t{p0} * kPanelCols;
  for (int j = 0; j < n; ++j) {
    const T* row = base + nz[j] * ld;
    for (int g = 0; g < groups; ++g) {
      __m256 wv[4];
      LoadPanelRow(row + g * kPanelCols, wv);
      for (int b = 0; b < rows; ++b) {
        const __m256 xb = _mm256_set1_ps(x[b * ldx + nz[j]]);
        float* a = acc + b * width + g * kPanelCols;
        for (int v = 0; v < 4; ++v) {
          _mm256_storeu_ps(a + 8 * v, _mm256_fmadd_ps(xb, wv[v], _mm256_loadu_ps(a + 8 * v)));
        }
      }
    }
  }
  for (int b = 0; b < rows; ++b) {  // Tile's epilogue
    for (int c = p0 * kPanelCols; c < std::min(out, p1 * kPanelCols); ++c) {
      const float s = acc[b * width + c - p0 * kPanelCols];
      float& dst = y[b * ldy + c];
      if constexpr (sizeof(T) == 1) {
        dst = accumulate ? std::fma(s, scale[c], dst) : s * scale[c];
      } else {
        dst = accumulate ? dst + s : s;
      }
    }
  }
}

// The integer-product panels' chunks as four vectors of 8 columns x 4 inputs (columns 0-7, 8-15,
// 16-23, 24-31), as the AVX-512 Int4Chunks / Int8Chunks give two of 16.
struct Int4Chunks {
  static constexpr int kBlockBytes = kI4BlockBytes, kOffset = 8;
  static constexpr bool kGroupScales = true;
  MODRWKV_AVX2 static void Load(const uint8_t* block, int k, __m256i wv[4]) {
    const uint8_t* chunk = block + 2 * kPanelCols + 64 * k;
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk));
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + 32));
    const __m256i low = _mm256_set1_epi8(0x0F);
    wv[0] = _mm256_and_si256(a, low);
    wv[1] = _mm256_and_si256(c, low);
    wv[2] = _mm256_and_si256(_mm256_srli_epi16(a, 4), low);
    wv[3] = _mm256_and_si256(_mm256_srli_epi16(c, 4), low);
  }
};
struct Int8Chunks {
  static constexpr int kBlockBytes = kI8DotBlockBytes, kOffset = 128;
  static constexpr bool kGroupScales = false;
  MODRWKV_AVX2 static void Load(const uint8_t* block, int k, __m256i wv[4]) {
    for (int v = 0; v < 4; ++v) {
      wv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 * k + 32 * v));
    }
  }
};

// I4Gemm's and I8DotGemm's arithmetic on AVX2 (also AVX-512 machines without VNNI): each 32-bit
// sum of 4 products by multiply-adds of bytes into 16 bits and of those into 32 bits (Dot4):
// vpdpbusd's exact sums. Tiles of up to 2 rows (16 registers).
constexpr int kDotTileRows = 2;

// Exact 32-bit sums of 4 products u8 x s8 per lane: vpmaddubsw adds pairs into 16 bits with
// saturation, which int4's bytes (<= 15: 2 x 15 x 127) never reach but int8's offset bytes
// (<= 255: 2 x 255 x 127) can, so for those the weights' high and low bits are multiplied apart.
template <typename Fmt>
MODRWKV_AVX2 inline __m256i Dot4(__m256i wv, __m256i xb) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Fmt::kOffset == 8) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xb), ones);
  } else {
    // w = 16 * (w >> 4) + (w & 15): each part's pair sums stay within 2 x 15 x 127.
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low);
    const __m256i lo = _mm256_and_si256(wv, low);
    const __m256i sum_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xb), ones);
    const __m256i sum_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xb), ones);
    return _mm256_add_epi32(_mm256_slli_epi32(sum_hi, 4), sum_lo);
  }
}

template <typename Fmt, int MR>
MODRWKV_AVX2 void DotTile(const uint8_t* w, int groups, const int8_t* xq, const float* xscale,
                          const int32_t* xsum, const float* scale, float* y, int64_t ldy, int cols,
                          bool accumulate) {
  alignas(32) float total[MR][kPanelCols] = {};
  const int64_t ldq = int64_t{groups} * kI4Group;
  for (int g = 0; g < groups; ++g) {
    const uint8_t* block = w + int64_t{g} * Fmt::kBlockBytes;
    __m256i acc[MR][4];  // from minus the offset times the x sum, as the AVX-512 tile
    for (int b = 0; b < MR; ++b) {
      const __m256i off = _mm256_set1_epi32(-Fmt::kOffset * xsum[int64_t{b} * groups + g]);
      for (int v = 0; v < 4; ++v) acc[b][v] = off;
    }
    for (int k = 0; k < kI4Group / 4; ++k) {
      __m256i wv[4];
      Fmt::Load(block, k, wv);
      for (int b = 0; b < MR; ++b) {
        int32_t four;
        std::memcpy(&four, xq + b * ldq + int64_t{g} * kI4Group + 4 * k, 4);
        const __m256i xb = _mm256_set1_epi32(four);
        for (int v = 0; v < 4; ++v) acc[b][v] = _mm256_add_epi32(acc[b][v], Dot4<Fmt>(wv[v], xb));
      }
    }
    __m256 sv[4];
    if constexpr (Fmt::kGroupScales) LoadPanelRow(reinterpret_cast<const uint16_t*>(block), sv);
    for (int b = 0; b < MR; ++b) {
      const __m256 xs = _mm256_set1_ps(xscale[int64_t{b} * groups + g]);
      for (int v = 0; v < 4; ++v) {
        float* t = total[b] + 8 * v;
        const __m256 s = Fmt::kGroupScales ? _mm256_mul_ps(sv[v], xs) : xs;
        _mm256_store_ps(t, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[b][v]), s, _mm256_load_ps(t)));
      }
    }
  }
  for (int b = 0; b < MR; ++b) {
    float* dst = y + b * ldy;
    for (int c = 0; c < std::min(cols, kPanelCols); ++c) {
      if constexpr (Fmt::kGroupScales) {
        dst[c] = accumulate ? dst[c] + total[b][c] : total[b][c];
      } else {
        dst[c] = accumulate ? std::fma(total[b][c], scale[c], dst[c]) : total[b][c] * scale[c];
      }
    }
  }
}

template <typename Fmt>
void DotGemm(const uint8_t* w, const float* scale, int in, int out, int p0, int p1,
             const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
             int64_t ldy, bool accumulate) {
  const int groups = (in + kI4Group - 1) / kI4Group;
  const int64_t ps = int64_t{groups} * Fmt::kBlockBytes, ldq = int64_t{groups} * kI4Group;
  for (int p = p0; p < p1; ++p) {
    for (int r = 0; r < rows; r += kDotTileRows) {
      auto tile = rows - r >= 2 ? DotTile<Fmt, 2> : DotTile<Fmt, 1>;
      tile(w + p * ps, groups, xq + r * ldq, xscale + int64_t{r} * groups,
           xsum + int64_t{r} * groups, scale ? scale + p * kPanelCols : nullptr,
           y + r * ldy + p * kPanelCols, ldy, out - p * kPanelCols, accumulate);
    }
  }
}

}  // namespace

void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* /*xi*/) {
  const auto gemm = wt == WType::kI4 ? DotGemm<Int4Chunks> : DotGemm<Int8Chunks>;
  gemm(static_cast<const uint8_t*>(w), col_scale, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy,
       accumulate);
}

void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  WithWeights(wt, w, [&](const auto* typed) {
    PanelGemmT(typed, col_scale, in, out, g, p0, p1, xp, rows, y, ldy, accumulate);
  });
}

void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc) {
  WithWeights(wt, w, [&](const auto* typed) {
    SparseRows(typed, col_scale, out, ld, p0, p1, x, ldx, rows, nonzero, n, y, ldy, accumulate,
               acc);
  });
}

}  // namespace avx2
}  // namespace modrwkv::cpu

#endif  // __x86_64__

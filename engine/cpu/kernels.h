// CPU kernels of the RWKV7 forward pass. Each has a portable scalar version (the test oracle)
// and SIMD versions picked once at start-up from the CPU's features (AVX-512, AVX2).
#pragma once

#include <cstdint>
#include <limits>
#include <string>

namespace modrwkv::cpu {

// Matrix weights: f32, bf16 (upper half of an f32), int8 with one f32 scale per output
// column (w = q * scale[out]), or int4 with a bf16 scale per output column and group of
// kI4Group inputs, stored inside the panels (w = (q - 8) * scale[out][group], q in 0..15).
enum class WType { kF32, kBF16, kI8, kI4 };

// Dense-layer weights W[out][in] are packed in panels of kPanelCols output columns: panel p holds,
// for each input index i in order, the weights W[p*32 + c][i] of its 32 columns c (f32 and int8
// in column order; bf16 as 16 words, word j holding column j in its low half and column j + 16 in
// its high half). Columns past `out` are zero padding. A panel is one contiguous stream of
// in * 32 weights, read once per call however many rows of x there are.
constexpr int kPanelCols = 32;
// int4 panels (packed layout only; I4Gemm) are runs of blocks, one per group of kI4Group inputs
// (the last group may be partial; its missing inputs are padding, q = 8): a block is the group's
// 32 scales as bf16 words laid out as a bf16 panel row (64 bytes), then 8 chunks of 64 bytes, one
// per 4 inputs: byte 4j + r of chunk k holds, for input 4k + r of the group, column j's q in its
// low nibble and column j + 16's in its high nibble (so a chunk's low nibbles are 16 columns x 4
// inputs, what one 32-bit lane per column of an integer dot-product instruction takes). A panel
// is ceil(in / 32) blocks of kI4BlockBytes, 4.5 bits per weight.
constexpr int kI4Group = 32;
constexpr int kI4BlockBytes = 2 * kPanelCols + kI4Group * kPanelCols / 2;
inline int64_t I4PanelBytes(int in) {
  return int64_t{(in + kI4Group - 1) / kI4Group} * kI4BlockBytes;
}
// int8 weights for the same integer products (Layout::kDotChunks; I8DotGemm): per panel, per
// group of kI4Group inputs, 8 chunks of 128 bytes, one per 4 inputs: byte 4j + r of its first 64
// holds column j's q + 128 (a byte in 1..255) for input 4k + r of the group, its second 64 the
// same for columns 16..31. The scales stay one f32 per output column, outside the panels.
constexpr int kI8DotBlockBytes = kI4Group * kPanelCols;
inline int64_t I8DotPanelBytes(int in) {
  return int64_t{(in + kI4Group - 1) / kI4Group} * kI8DotBlockBytes;
}
// Rows of x that one register tile multiplies per pass over a panel. The rows of a call are split
// into RowTiles(rows) tiles of balanced sizes (13 rows: 7 + 6, not 12 + 1).
constexpr int kMaxTileRows = 12;
inline int RowTiles(int rows) { return (rows + kMaxTileRows - 1) / kMaxTileRows; }
inline int RowTileSize(int rows, int t) {
  const int tiles = RowTiles(rows);
  return rows / tiles + (t < rows % tiles);
}

// Where the panels of a matrix lie: panel p starts at element p * panel_stride and its input row i
// at i * row_stride from there, as one row of 32 weights in the layout above. Packed panels
// (Layout::kPanels) are {in * 32, 32}: each panel one contiguous stream. Input-major storage
// (Layout::kInputRows) is {32, ld}: input row i holds the weights of every output column, its
// 32-column groups one after another (ld = out rounded up to 32), so that a product can read
// only the rows of the inputs that are not zero (SparseRowsGemm).
struct PanelGeometry {
  int64_t panel_stride;
  int64_t row_stride;
  static PanelGeometry Packed(int in) { return {int64_t{in} * kPanelCols, kPanelCols}; }
  static PanelGeometry InputMajor(int out) {
    return {kPanelCols, (int64_t{out} + kPanelCols - 1) / kPanelCols * kPanelCols};
  }
};

// Packs rows x[b*ldx + i] (b < rows, i < in) for PanelGemm: tile by tile, each tile of mr rows
// stored input-major (xp[i*mr + b]), tiles one after another: rows * in floats in all.
void PackRows(const float* x, int64_t ldx, int rows, int in, float* xp);

// y[b*ldy + o] (=|+=) s_o * sum_i x[b][i] * W[o][i]   for b < rows, o in the columns of panels
// [p0, p1) below `out`; x packed by PackRows; s_o = col_scale[o] for kI8 and 1 otherwise; not
// for kI4 (I4Gemm). Each output is one fused multiply-add chain over i in increasing order,
// whatever the ISA, the number of rows or the panel range: results are bit-identical to the scalar
// kernel's and do not depend on which other rows run in the same call (batch invariance).
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
               const float* xp, int rows, float* y, int64_t ldy, bool accumulate);
// The same over panels laid out as `g` says (the same arithmetic, the same bits).
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate);

// int4 products take x rounded to int8 (as llama.cpp's Q4_0 x Q8_0): per row b and group g of
// kI4Group inputs, xscale = max|x| / 127 and xq = round(x * (127 / max|x|)) (half to even; 0
// for an all-zero group and for one too small for 127 / max|x| to be finite; xscale NaN for a
// group with a NaN or an infinity), xsum = the group's sum of xq. Row b's group g is at
// xq + (b * groups + g) * 32 (the last group's missing inputs 0), its scale and sum at
// [b * groups + g], groups = ceil(in / 32). Every ISA gives the scalar kernel's bits, so every
// ISA's I4Gemm sees the same xq.
void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq, float* xscale,
                    int32_t* xsum);

// A group's x scale and the factor its inputs are multiplied by before rounding (0: every input
// rounds to 0), from the group's max|x| and whether all its inputs are finite: QuantizeRowsI4's
// rule, shared by its scalar and SIMD kernels.
struct I4XScale {
  float scale = 0;
  float inv = 0;
};
inline I4XScale I4XScaleOf(float amax, bool finite) {
  // A NaN or infinity makes the group's products NaN, as f32 products would.
  if (!finite) return {std::numeric_limits<float>::quiet_NaN(), 0.0f};
  const float scale = amax / 127.0f, inv = 127.0f / amax;
  // inv overflows for max|x| below ~7.5e-37: such a group's products are zero to f32 precision.
  return {scale, scale > 0 && inv <= std::numeric_limits<float>::max() ? inv : 0.0f};
}

// y[b*ldy + o] (=|+=) the sum over groups g, in order, of
//   float(sum_i xq[b][i] * q[o][i] - 8 * xsum[b][g]) * (wscale[o][g] * xscale[b][g])
// for b < rows, o in the columns of int4 panels [p0, p1) below `out`, each group's integer sum
// exact (|xq| <= 127, q <= 15) and added to the output's total with one fused multiply-add, from
// zero, group after group. So the results are the same on every ISA (AVX-512 VNNI's vpdpbusd,
// AVX2's multiply-adds, the scalar loop), and depend only on their own row of x.
// xi: null, or xq laid out by InterleaveRowsI4 (the AVX-512 VNNI kernel's own layout, which it
// makes from xq on every call otherwise: a product split in panel runs makes it once).
void I4Gemm(const void* w, int in, int out, int p0, int p1, const int8_t* xq, const float* xscale,
            const int32_t* xsum, int rows, float* y, int64_t ldy, bool accumulate,
            const int32_t* xi = nullptr);

// The same for int8 chunked panels with a scale per output column (col_scale):
//   y[b*ldy + o] (=|+=) col_scale[o] * total,  total = the sum over groups g, in order, of
//   float(sum_i xq[b][i] * (q[o][i] + 128) - 128 * xsum[b][g]) * xscale[b][g]
// (one FMA per group from zero; the last step as int8's PanelGemm: fma(total, s, y) or total * s).
void I8DotGemm(const void* w, const float* col_scale, int in, int out, int p0, int p1,
               const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
               int64_t ldy, bool accumulate, const int32_t* xi = nullptr);

// x rounded by QuantizeRowsI4 ([rows][ceil(in / 32) * 32] bytes) as the AVX-512 integer
// products' tiles read it: the rows in RowTiles' tiles, each tile's rows interleaved by 4 inputs,
// xi[tile's first row * steps + j * tile rows + b] = row b's inputs 4j..4j+3 as one word, steps =
// ceil(in / 32) * 8 (so a tile reads every row's x from one pointer at constant offsets).
// InterleavedRowsI4Words(rows, in) words.
inline int64_t InterleavedRowsI4Words(int rows, int in) {
  return int64_t{rows} * ((in + kI4Group - 1) / kI4Group) * (kI4Group / 4);
}
void InterleaveRowsI4(const int8_t* xq, int rows, int in, int32_t* xi);

// Rows of x up to which SparseRowsGemm is used (decode steps of a few sequences).
constexpr int kSparseMaxRows = 4;

// PanelGemm's products for x whose inputs are mostly zero in every row (the channel mix's relu^2
// activations in a decode step), over input-major weights (PanelGeometry::InputMajor(out)):
// y[b*ldy + o] (=|+=) s_o * sum_{i in nonzero} x[b*ldx + i] * W[o][i] for b < rows <=
// kSparseMaxRows, o in the columns of groups [p0, p1). `nonzero` lists, in increasing order, n
// inputs that include every i with x[b][i] != 0 for some b; only their rows of W are read. Each
// output is one fused multiply-add chain over them in order, so the results are PanelGemm's on
// the same weights (a skipped term would add exactly zero to its chain) and, as there, depend
// only on their own row of x. acc: scratch for rows * 32 * (p1 - p0) floats. Not for kI4.
void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc);

// int4 weights stored input-major (Layout::kInputRows with kI4): the packed panels' levels and
// scales (MakeMatrix quantises both layouts alike), laid out for SparseI4Gemm, which reads only
// the rows of the inputs that are not zero. First ceil(in / 32) scale rows, row g holding column
// o's bf16 scale of group g at word o (I4ScaleRowWords(out) words a row); then one row of
// I4InputRowBytes(out) bytes per input (ceil(in / 32) * 32 rows, the padding at level 8). A row
// is 64-column blocks of 32 bytes: in a block, column 16a + 4l + j (a, l, j in 0..3) is at
// position 16l + 4a + j of 64, position p < 32 the low nibble of byte p and p >= 32 the high
// nibble of byte p - 32. That order is the one in which byte and word unpacks of four rows, lane
// by lane, give vectors of 16 consecutive columns x 4 inputs (vpdpbusd's operand).
constexpr int kI4RowCols = 64;
inline int64_t I4ScaleRowWords(int out) {
  return (int64_t{out} + kI4RowCols - 1) / kI4RowCols * kI4RowCols;
}
inline int64_t I4InputRowBytes(int out) { return I4ScaleRowWords(out) / 2; }
inline int64_t I4InputMajorBytes(int out, int in) {
  return int64_t{(in + kI4Group - 1) / kI4Group} *
         (2 * I4ScaleRowWords(out) + kI4Group * I4InputRowBytes(out));
}
// Position (0..63) of a block's column c (0..63) in the order above.
inline int I4RowPosition(int c) { return 16 * (c / 4 % 4) + 4 * (c / 16) + c % 4; }

// I4Gemm's results, bit for bit, for rows <= kSparseMaxRows of x rounded by QuantizeRowsI4,
// over int4 weights stored input-major (above), reading only the weights of the n inputs listed
// in `nonzero` (increasing; they include every i with xq[b][i] != 0 for some b): each group's
// integer sum is exact whichever zero terms it leaves out, and a group with no listed input adds
// exactly zero to the totals where its x scales are finite (its weights and scales are not
// read then). Columns of the 64-column blocks [k0, k1) below `out`. acc: scratch for
// rows * 64 * (k1 - k0) floats.
void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc);

// In-place element-wise functions over n floats.
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);
// x = max(x, 0)^2 (the channel mix's activation).
void VecReluSquare(float* x, int64_t n);

// One head of the WKV7 recurrence over T tokens of one sequence.
//   state: [64 value i][64 key j] f32, updated in place.
//   r, w, k, v, kk, a: row t at ptr + t*ld (64 values each); w is the decay in (0, 1).
//   y: row t at y + t*ldy.
// Per token:  sa_i = sum_j S[i][j] * (-kk_j);  S[i][j] = S[i][j]*w_j + sa_i*kk_j*a_j + v_i*k_j;
//             y_i = sum_j S[i][j] * r_j.
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy);

// Sum of n floats with several independent accumulators: the memory-read benchmark's kernel.
// With `prefetch`, each stream is also requested 1 KiB ahead in software (a machine may read
// faster with or without: the benchmark takes the better).
float SumFloats(const float* x, int64_t n, bool prefetch);

// The integer products' instruction peak, for the benchmarks: `steps` rounds of the multiply-adds
// the dispatched I4Gemm is made of (AVX-512 VNNI: vpdpbusd; AVX2: vpmaddubsw, vpmaddwd, vpaddd)
// on accumulators that never leave the registers. Returns the byte multiply-adds done (0 where
// the products are scalar loops); twice that per second is the peak in integer ops/s.
int64_t IntegerDotPeakLoop(int64_t steps);

// Row-wise LayerNorm (eps inside the square root); out may be x.
void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out);

// Which implementation the dispatcher picked: "avx512", "avx2" or "scalar".
std::string KernelIsa();

// Forces an implementation for tests ("avx512", "avx2", "scalar"); returns false if the CPU
// lacks it. Not thread-safe: call before any kernel runs.
bool ForceKernelIsa(const std::string& isa);

namespace scalar {
void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, PanelGeometry g,
               int p0, int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate);
inline void PanelGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0,
                      int p1, const float* xp, int rows, float* y, int64_t ldy, bool accumulate) {
  scalar::PanelGemm(wt, w, col_scale, in, out, PanelGeometry::Packed(in), p0, p1, xp, rows, y, ldy,
                    accumulate);
}
void SparseRowsGemm(WType wt, const void* w, const float* col_scale, int out, int64_t ld, int p0,
                    int p1, const float* x, int64_t ldx, int rows, const int32_t* nonzero, int n,
                    float* y, int64_t ldy, bool accumulate, float* acc);
void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc);
// I4Gemm (wt kI4, col_scale unused) or I8DotGemm (wt kI8); xi unused.
void IntegerGemm(WType wt, const void* w, const float* col_scale, int in, int out, int p0, int p1,
                 const int8_t* xq, const float* xscale, const int32_t* xsum, int rows, float* y,
                 int64_t ldy, bool accumulate, const int32_t* xi);
inline void I4Gemm(const void* w, int in, int out, int p0, int p1, const int8_t* xq,
                   const float* xscale, const int32_t* xsum, int rows, float* y, int64_t ldy,
                   bool accumulate) {
  IntegerGemm(WType::kI4, w, nullptr, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy, accumulate,
              nullptr);
}
inline void I8DotGemm(const void* w, const float* col_scale, int in, int out, int p0, int p1,
                      const int8_t* xq, const float* xscale, const int32_t* xsum, int rows,
                      float* y, int64_t ldy, bool accumulate) {
  IntegerGemm(WType::kI8, w, col_scale, in, out, p0, p1, xq, xscale, xsum, rows, y, ldy, accumulate,
              nullptr);
}
void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq, float* xscale,
                    int32_t* xsum);
void VecExp(float* x, int64_t n);
void VecSigmoid(float* x, int64_t n);
void VecTanh(float* x, int64_t n);
void VecReluSquare(float* x, int64_t n);
void WkvHead(float* state, int T, const float* r, const float* w, const float* k, const float* v,
             const float* kk, const float* a, int64_t ld, float* y, int64_t ldy);
float SumFloats(const float* x, int64_t n, bool prefetch);
void LayerNorm(const float* x, const float* weight, const float* bias, int n, float eps,
               float* out);
inline int64_t IntegerDotPeakLoop(int64_t) { return 0; }
}  // namespace scalar

}  // namespace modrwkv::cpu

// AVX-512 VNNI and AVX2 versions of SparseI4Gemm (engine/cpu/kernels.h): int4 products over
// input-major weights that read only the rows of the listed inputs. Four listed rows at a time
// (a quad; the last one of a group padded with a row whose x byte is 0), block by block over the
// thread's columns: per 64-column block the four rows' nibbles are widened to bytes and
// interleaved by byte and word unpacks into vectors of 16 columns x 4 inputs, which the stored
// column order (I4RowPosition) makes consecutive columns, then multiplied as I4Gemm multiplies
// its chunks. A block's integer sums stay in registers over its group's quads; then each sum
// less the offset times the group's x sum, converted, times (the weight scale x the x scale),
// goes into its output's total with one FMA: I4Gemm's arithmetic, group after group.
#if defined(__x86_64__)

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/cpu/kernels.h"
#include "engine/cpu/kernels_x86.h"
#include "engine/cpu/x86_simd.h"

namespace modrwkv::cpu {
namespace {

// The first index at or after `j` whose input lies past group g.
int GroupEnd(const int32_t* nonzero, int n, int j, int g) {
  while (j < n && nonzero[j] < (g + 1) * kI4Group) ++j;
  return j;
}

// Whether group g may be left out when none of its inputs is listed: its terms are all zero, and
// a zero added to a total changes no bit unless an x scale is NaN (then I4Gemm's product is NaN).
bool ScalesFinite(const float* xscale, int groups, int g, int rows) {
  for (int b = 0; b < rows; ++b) {
    if (!std::isfinite(xscale[int64_t{b} * groups + g])) return false;
  }
  return true;
}

// A group's listed inputs in quads of four rows (the last quad's missing ones repeat its first
// row with x 0), and each quad's four x bytes as one 32-bit value per row of x.
struct GroupQuads {
  int count = 0;
  const uint8_t* row[kI4Group / 4][4];
  int32_t x[kI4Group / 4][kSparseMaxRows];
};

void MakeQuads(const uint8_t* input_rows, int64_t row_bytes, const int32_t* nonzero, int j, int j1,
               const int8_t* xq, int64_t ldq, int rows, GroupQuads* q) {
  q->count = (j1 - j + 3) / 4;
  for (int t = 0; t < q->count; ++t) {
    for (int b = 0; b < rows; ++b) q->x[t][b] = 0;
    for (int k = 0; k < 4; ++k) {
      const int at = j + 4 * t + k;
      const int i = nonzero[at < j1 ? at : j + 4 * t];
      q->row[t][k] = input_rows + i * row_bytes;
      for (int b = 0; b < rows; ++b) {
        const int8_t v = at < j1 ? xq[b * ldq + i] : 0;
        uint8_t byte;
        std::memcpy(&byte, &v, 1);
        q->x[t][b] |= static_cast<int32_t>(static_cast<uint32_t>(byte) << (8 * k));
      }
    }
  }
}

// Requests the `bytes` from p into L2.
void Prefetch(const uint8_t* p, int64_t bytes) {
  for (int64_t at = 0; at < bytes; at += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + at), _MM_HINT_T1);
  }
}

// How far the requests run ahead of the arithmetic, in bytes of listed rows (and in groups, for
// the scale rows).
constexpr int64_t kAheadBytes = 32 * 1024;
constexpr int kAheadGroups = 2;

// The walk both ISAs share: groups in order; for each group with a listed input (or a NaN x
// scale), Isa::Group<MR> runs its quads block by block with the block's integer sums in
// registers, then the group's step into the totals (acc); at the end the totals go to y. The
// listed rows (over the thread's columns) are requested kAheadBytes ahead and the scale rows
// kAheadGroups ahead: a group's rows are short, scattered streams that the hardware prefetchers
// do not follow.
template <typename Isa>
void Walk(const uint8_t* w, int in, int out, int k0, int k1, const int8_t* xq, const float* xscale,
          const int32_t* xsum, int rows, const int32_t* nonzero, int n, float* y, int64_t ldy,
          bool accumulate, float* acc) {
  const int groups = (in + kI4Group - 1) / kI4Group;
  const int64_t words = I4ScaleRowWords(out), row_bytes = I4InputRowBytes(out);
  const int blocks = k1 - k0, width = blocks * kI4RowCols;
  const int64_t c0 = int64_t{k0} * kI4RowCols, ldq = int64_t{groups} * kI4Group;
  const uint8_t* input_rows = w + 2 * groups * words + c0 / 2;
  std::fill(acc, acc + int64_t{rows} * width, 0.0f);
  static constexpr decltype(&Isa::template Group<1>) kGroups[] = {
      Isa::template Group<1>, Isa::template Group<2>, Isa::template Group<3>,
      Isa::template Group<4>};
  static_assert(kSparseMaxRows == 4);
  GroupQuads quads;
  // Listed rows requested so far: kept ahead_rows ahead of the group being multiplied.
  const int ahead_rows = static_cast<int>(std::max<int64_t>(kI4Group, kAheadBytes / (width / 2)));
  int requested = 0;
  for (int g = 0; g < std::min(kAheadGroups, groups); ++g) {
    Prefetch(w + 2 * (g * words + c0), 2 * width);
  }
  int j = 0;
  for (int g = 0; g < groups; ++g) {
    const int j1 = GroupEnd(nonzero, n, j, g);
    for (; requested < std::min(n, j + ahead_rows); ++requested) {
      Prefetch(input_rows + nonzero[requested] * row_bytes, width / 2);
    }
    if (g + kAheadGroups < groups) Prefetch(w + 2 * ((g + kAheadGroups) * words + c0), 2 * width);
    if (j1 == j && ScalesFinite(xscale, groups, g, rows)) continue;
    MakeQuads(input_rows, row_bytes, nonzero, j, j1, xq, ldq, rows, &quads);
    float xs[kSparseMaxRows];
    int32_t offset[kSparseMaxRows];
    for (int b = 0; b < rows; ++b) {
      xs[b] = xscale[int64_t{b} * groups + g];
      offset[b] = 8 * xsum[int64_t{b} * groups + g];
    }
    const uint16_t* scale = reinterpret_cast<const uint16_t*>(w) + g * words + c0;
    kGroups[rows - 1](quads, blocks, scale, xs, offset, acc, width);
    j = j1;
  }
  const int cols = static_cast<int>(std::min<int64_t>(width, out - c0));
  for (int b = 0; b < rows; ++b) {
    float* dst = y + b * ldy + c0;
    const float* total = acc + int64_t{b} * width;
    for (int c = 0; c < cols; ++c) dst[c] = accumulate ? dst[c] + total[c] : total[c];
  }
}

}  // namespace

namespace avx512 {
namespace {

struct Vnni {
  // The four rows' 32 bytes at `off` as 4 vectors of 16 columns x 4 inputs, columns 0-15, 16-31,
  // 32-47, 48-63 of the block.
  MODRWKV_AVX512_VNNI static void Interleave(const uint8_t* const row[4], int64_t off,
                                             __m512i u[4]) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m512i v[4];
    for (int k = 0; k < 4; ++k) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[k] + off));
      v[k] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(b, low)),
                                _mm256_and_si256(_mm256_srli_epi16(b, 4), low), 1);
    }
    const __m512i t0 = _mm512_unpacklo_epi8(v[0], v[1]), t1 = _mm512_unpackhi_epi8(v[0], v[1]);
    const __m512i t2 = _mm512_unpacklo_epi8(v[2], v[3]), t3 = _mm512_unpackhi_epi8(v[2], v[3]);
    u[0] = _mm512_unpacklo_epi16(t0, t2);
    u[1] = _mm512_unpackhi_epi16(t0, t2);
    u[2] = _mm512_unpacklo_epi16(t1, t3);
    u[3] = _mm512_unpackhi_epi16(t1, t3);
  }

  template <int MR>
  MODRWKV_AVX512_VNNI static void Group(const GroupQuads& q, int blocks, const uint16_t* scale,
                                        const float* xscale, const int32_t* offset, float* acc,
                                        int width) {
    for (int blk = 0; blk < blocks; ++blk) {
      const int64_t off = int64_t{blk} * (kI4RowCols / 2);
      __m512i sum[MR][4];
      for (int b = 0; b < MR; ++b)
        for (int a = 0; a < 4; ++a) sum[b][a] = _mm512_setzero_si512();
      for (int t = 0; t < q.count; ++t) {
        __m512i u[4];
        Interleave(q.row[t], off, u);
        for (int b = 0; b < MR; ++b) {
          const __m512i xb = _mm512_set1_epi32(q.x[t][b]);
          for (int a = 0; a < 4; ++a) sum[b][a] = _mm512_dpbusd_epi32(sum[b][a], u[a], xb);
        }
      }
      const uint16_t* sc = scale + blk * kI4RowCols;
      for (int a = 0; a < 4; ++a) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + 16 * a));
        const __m512 ws = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        for (int b = 0; b < MR; ++b) {
          float* t = acc + int64_t{b} * width + blk * kI4RowCols + 16 * a;
          const __m512 d =
              _mm512_cvtepi32_ps(_mm512_sub_epi32(sum[b][a], _mm512_set1_epi32(offset[b])));
          _mm512_storeu_ps(t, _mm512_fmadd_ps(d, _mm512_mul_ps(ws, _mm512_set1_ps(xscale[b])),
                                              _mm512_loadu_ps(t)));
        }
      }
    }
  }
};

}  // namespace

void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc) {
  Walk<Vnni>(static_cast<const uint8_t*>(w), in, out, k0, k1, xq, xscale, xsum, rows, nonzero, n, y,
             ldy, accumulate, acc);
}

}  // namespace avx512

namespace avx2 {
namespace {

struct Avx2 {
  // One half of four rows' bytes (h = 0: the low nibbles, block positions 0-31; h = 1: the high
  // ones, 32-63) as 4 vectors of 8 columns x 4 inputs: columns 16a + 8h .. + 7 of the block in
  // vector a.
  MODRWKV_AVX2 static void Interleave(const __m256i bytes[4], int h, __m256i u[4]) {
    const __m256i low = _mm256_set1_epi8(0x0F);
    __m256i v[4];
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_and_si256(h ? _mm256_srli_epi16(bytes[k], 4) : bytes[k], low);
    }
    const __m256i t0 = _mm256_unpacklo_epi8(v[0], v[1]), t1 = _mm256_unpackhi_epi8(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi8(v[2], v[3]), t3 = _mm256_unpackhi_epi8(v[2], v[3]);
    u[0] = _mm256_unpacklo_epi16(t0, t2);
    u[1] = _mm256_unpackhi_epi16(t0, t2);
    u[2] = _mm256_unpacklo_epi16(t1, t3);
    u[3] = _mm256_unpackhi_epi16(t1, t3);
  }

  template <int MR>
  MODRWKV_AVX2 static void Group(const GroupQuads& q, int blocks, const uint16_t* scale,
                                 const float* xscale, const int32_t* offset, float* acc,
                                 int width) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int blk = 0; blk < blocks; ++blk) {
      const int64_t off = int64_t{blk} * (kI4RowCols / 2);
      for (int h = 0; h < 2; ++h) {
        __m256i sum[MR][4];
        for (int b = 0; b < MR; ++b)
          for (int a = 0; a < 4; ++a) sum[b][a] = _mm256_setzero_si256();
        for (int t = 0; t < q.count; ++t) {
          __m256i bytes[4], u[4];
          for (int k = 0; k < 4; ++k) {
            bytes[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.row[t][k] + off));
          }
          Interleave(bytes, h, u);
          for (int b = 0; b < MR; ++b) {
            const __m256i xb = _mm256_set1_epi32(q.x[t][b]);
            for (int a = 0; a < 4; ++a) {
              // int4's bytes (<= 15) keep vpmaddubsw's pair sums within 16 bits (2 x 15 x 127).
              const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(u[a], xb), ones);
              sum[b][a] = _mm256_add_epi32(sum[b][a], dot);
            }
          }
        }
        for (int a = 0; a < 4; ++a) {
          const int c = blk * kI4RowCols + 16 * a + 8 * h;
          const __m128i s16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scale + c));
          const __m256 ws = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(s16), 16));
          for (int b = 0; b < MR; ++b) {
            float* t = acc + int64_t{b} * width + c;
            const __m256 d =
                _mm256_cvtepi32_ps(_mm256_sub_epi32(sum[b][a], _mm256_set1_epi32(offset[b])));
            _mm256_storeu_ps(t, _mm256_fmadd_ps(d, _mm256_mul_ps(ws, _mm256_set1_ps(xscale[b])),
                                                _mm256_loadu_ps(t)));
          }
        }
      }
    }
  }
};

}  // namespace

void SparseI4Gemm(const void* w, int in, int out, int k0, int k1, const int8_t* xq,
                  const float* xscale, const int32_t* xsum, int rows, const int32_t* nonzero, int n,
                  float* y, int64_t ldy, bool accumulate, float* acc) {
  Walk<Avx2>(static_cast<const uint8_t*>(w), in, out, k0, k1, xq, xscale, xsum, rows, nonzero, n, y,
             ldy, accumulate, acc);
}

}  // namespace avx2
}  // namespace modrwkv::cpu

#endif  // __x86_64__

// AVX-512 and AVX2 kernels. Functions carry target attributes instead of the whole file being
// compiled with -mavx512f, so no AVX-512 instruction can leak into code that runs on older CPUs.
#if defined(__x86_64__)

#include "engine/cpu/kernels_x86.h"

#include <cmath>

#include "engine/cpu/kernels.h"
#include "engine/cpu/x86_simd.h"

namespace modrwkv::cpu {
namespace avx512 {
namespace {

// exp with a Cephes-style polynomial on the reduced argument; ~1 ulp over the float range.
MODRWKV_AVX512 inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-103.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

MODRWKV_AVX512 inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

template <typename F>
MODRWKV_AVX512 inline void Map(float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, f(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

}  // namespace

MODRWKV_AVX512 void VecExp(float* x, int64_t n) {
  Map(x, n, [](__m512 v) MODRWKV_AVX512 { return Exp(v); });
}
MODRWKV_AVX512 void VecSigmoid(float* x, int64_t n) {
  Map(x, n, [](__m512 v) MODRWKV_AVX512 { return Sigmoid(v); });
}
MODRWKV_AVX512 void VecReluSquare(float* x, int64_t n) {
  Map(x, n, [](__m512 v) MODRWKV_AVX512 {
    const __m512 t = _mm512_max_ps(v, _mm512_setzero_ps());
    return _mm512_mul_ps(t, t);
  });
}
MODRWKV_AVX512 void VecTanh(float* x, int64_t n) {
  // tanh(x) = 2 sigmoid(2x) - 1; for |x| < 2^-7 use x - x^3/3 to keep the relative error small.
  Map(x, n, [](__m512 v) MODRWKV_AVX512 {
    const __m512 t =
        _mm512_fmsub_ps(_mm512_set1_ps(2.0f), Sigmoid(_mm512_add_ps(v, v)), _mm512_set1_ps(1.0f));
    const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    const __m512 small = _mm512_fnmadd_ps(v3, _mm512_set1_ps(1.0f / 3.0f), v);
    const __mmask16 is_small =
        _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(0.0078125f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(is_small, t, small);
  });
}

MODRWKV_AVX512 void WkvHead(float* state, int T, const float* r, const float* w, const float* k,
                            const float* v, const float* kk, const float* a, int64_t ld, float* y,
                            int64_t ldy) {
  for (int t = 0; t < T; ++t) {
    __m512 wv[4], bv[4], kv[4], rv[4], nkk[4];
    const float* base = nullptr;
    (void)base;
    for (int c = 0; c < 4; ++c) {
      const int64_t off = t * ld + 16 * c;
      wv[c] = _mm512_loadu_ps(w + off);
      kv[c] = _mm512_loadu_ps(k + off);
      rv[c] = _mm512_loadu_ps(r + off);
      const __m512 kkc = _mm512_loadu_ps(kk + off);
      nkk[c] = _mm512_sub_ps(_mm512_setzero_ps(), kkc);
      bv[c] = _mm512_mul_ps(kkc, _mm512_loadu_ps(a + off));
    }
    const float* vt = v + t * ld;
    float* yt = y + t * ldy;
    for (int i = 0; i < 64; ++i) {
      float* s = state + i * 64;
      __m512 sv[4];
      __m512 dot = _mm512_setzero_ps();
      for (int c = 0; c < 4; ++c) {
        sv[c] = _mm512_loadu_ps(s + 16 * c);
        dot = _mm512_fmadd_ps(sv[c], nkk[c], dot);
      }
      const __m512 sa = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
      const __m512 vi = _mm512_set1_ps(vt[i]);
      __m512 out = _mm512_setzero_ps();
      for (int c = 0; c < 4; ++c) {
        __m512 n = _mm512_mul_ps(sv[c], wv[c]);
        n = _mm512_fmadd_ps(sa, bv[c], n);
        n = _mm512_fmadd_ps(vi, kv[c], n);
        _mm512_storeu_ps(s + 16 * c, n);
        out = _mm512_fmadd_ps(n, rv[c], out);
      }
      yt[i] = _mm512_reduce_add_ps(out);
    }
  }
}

// QuantizeRowsI4, 32 inputs (one group) at a time: the same max, the same products (x * inv),
// rounded half to even by the conversion (the scalar kernel's add-and-subtract of 1.5 * 2^23 on
// values within +-128), so the same bits.
MODRWKV_AVX512 void QuantizeRowsI4(const float* x, int64_t ldx, int rows, int in, int8_t* xq,
                                   float* xscale, int32_t* xsum) {
  const int groups = (in + kI4Group - 1) / kI4Group;
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int b = 0; b < rows; ++b) {
    for (int g = 0; g < groups; ++g) {
      const float* src = x + b * ldx + g * kI4Group;
      const int n = std::min(kI4Group, in - g * kI4Group);
      const __mmask16 m0 = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
      const __mmask16 m1 = n >= 32  ? 0xFFFF
                           : n > 16 ? static_cast<__mmask16>((1u << (n - 16)) - 1)
                                    : 0;
      const __m512 v0 = _mm512_maskz_loadu_ps(m0, src), v1 = _mm512_maskz_loadu_ps(m1, src + 16);
      // fpclass 0x99: quiet NaN, +infinity, -infinity, signalling NaN.
      const bool finite =
          (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) == 0;
      const float amax = _mm512_reduce_max_ps(
          _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
      const I4XScale s = I4XScaleOf(amax, finite);
      const int64_t at = int64_t{b} * groups + g;
      int8_t* q = xq + at * kI4Group;
      __m512i q0 = _mm512_setzero_si512(), q1 = q0;
      if (s.inv != 0) {
        const __m512 inv = _mm512_set1_ps(s.inv);
        q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, inv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, inv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q0 = _mm512_min_epi32(_mm512_max_epi32(q0, lo), hi);
        q1 = _mm512_min_epi32(_mm512_max_epi32(q1, lo), hi);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q1));
      xscale[at] = s.scale;
      xsum[at] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
  }
}

// 12 independent sums, more than vpdpbusd's latency times its issue rate: the loop is bound by
// the instruction's throughput alone. The empty asm makes the operand opaque, so the compiler
// keeps every multiply-add.
MODRWKV_AVX512_VNNI int64_t IntegerDotPeakLoop(int64_t steps) {
  constexpr int kSums = 12;
  __m512i acc[kSums];
  for (int i = 0; i < kSums; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(3);
  const __m512i b = _mm512_set1_epi8(-5);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < kSums; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a));
  }
  __m512i total = acc[0];
  for (int i = 1; i < kSums; ++i) total = _mm512_add_epi32(total, acc[i]);
  asm volatile("" : : "v"(total));
  return steps * kSums * 64;
}

MODRWKV_AVX512 float SumFloats(const float* x, int64_t n, bool prefetch) {
  // Four streams over the four quarters of the buffer, optionally with software prefetch: on some
  // machines one sequential stream cannot keep enough cache-line misses in flight to reach the
  // memory's bandwidth; on others (a Zen 4 VM) the hardware prefetcher alone reads faster.
  const int64_t q = (n / 4) & ~int64_t{15};
  const float* p[4] = {x, x + q, x + 2 * q, x + 3 * q};
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (int64_t i = 0; i < q; i += 16) {
    for (int s = 0; s < 4; ++s) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(p[s] + i + 256), _MM_HINT_T0);
      acc[s] = _mm512_add_ps(acc[s], _mm512_loadu_ps(p[s] + i));
    }
  }
  float total = _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  for (int64_t i = 4 * q; i < n; ++i) total += x[i];
  return total;
}

MODRWKV_AVX512 void LayerNorm(const float* x, const float* weight, const float* bias, int n,
                              float eps, float* out) {
  auto mask = [n](int i) {
    return n - i >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << (n - i)) - 1);
  };
  __m512 acc = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask(i), x + i));
  const float mean = _mm512_reduce_add_ps(acc) / static_cast<float>(n);
  const __m512 m = _mm512_set1_ps(mean);
  acc = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 k = mask(i);
    const __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), m);
    acc = _mm512_fmadd_ps(d, d, acc);
  }
  const float var = _mm512_reduce_add_ps(acc) / static_cast<float>(n);
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(var + eps));
  for (int i = 0; i < n; i += 16) {
    const __mmask16 k = mask(i);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m), inv);
    _mm512_mask_storeu_ps(out + i, k,
                          _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(k, weight + i),
                                          _mm512_maskz_loadu_ps(k, bias + i)));
  }
}

}  // namespace avx512

// The element-wise functions on 8 lanes: the same polynomials as AVX-512, so the ISAs agree to
// rounding. (Without them an AVX2 machine ran libm's scalar exp: 17% of a Whisper encoder's time
// went to the softmax's expf.)
namespace avx2 {
namespace {

MODRWKV_AVX2 inline __m256 Set(float v) { return _mm256_set1_ps(v); }

// 2^e for integer lanes e whose float is normal (-126 <= e <= 127).
MODRWKV_AVX2 inline __m256 Pow2(__m256i e) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
}

MODRWKV_AVX2 inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, Set(88.3762626647949f)), Set(-103.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, Set(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, Set(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, Set(-2.12194440e-4f), r);
  __m256 p = Set(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, Set(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, Set(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, Set(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, Set(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, Set(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, Set(1.0f)));
  // p * 2^n in two steps (n in [-149, 128]): each factor stays a normal float, and the second
  // product rounds into the subnormal range as scalef does.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  return _mm256_mul_ps(_mm256_mul_ps(p, Pow2(n1)), Pow2(_mm256_sub_epi32(ni, n1)));
}

MODRWKV_AVX2 inline __m256 Sigmoid(__m256 x) {
  return _mm256_div_ps(Set(1.0f), _mm256_add_ps(Set(1.0f), Exp(_mm256_sub_ps(Set(0.0f), x))));
}

template <typename F>
MODRWKV_AVX2 inline void Map(float* x, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float tail[8] = {};
    for (int64_t j = i; j < n; ++j) tail[j - i] = x[j];
    _mm256_store_ps(tail, f(_mm256_load_ps(tail)));
    for (int64_t j = i; j < n; ++j) x[j] = tail[j - i];
  }
}

}  // namespace

MODRWKV_AVX2 void VecExp(float* x, int64_t n) {
  Map(x, n, [](__m256 v) MODRWKV_AVX2 { return Exp(v); });
}
MODRWKV_AVX2 void VecSigmoid(float* x, int64_t n) {
  Map(x, n, [](__m256 v) MODRWKV_AVX2 { return Sigmoid(v); });
}
// The AVX2 integer products' sequence (gemm_x86.cc, Dot4 for int4): 32 byte multiply-adds per
// vpmaddubsw + vpmaddwd + vpaddd, on 8 independent sums.
MODRWKV_AVX2 int64_t IntegerDotPeakLoop(int64_t steps) {
  constexpr int kSums = 8;
  __m256i acc[kSums], a[kSums];  // an operand per sum: no product is common to two sums
  for (int i = 0; i < kSums; ++i) {
    acc[i] = _mm256_set1_epi32(i);
    a[i] = _mm256_set1_epi8(static_cast<char>(3 + i));
  }
  const __m256i b = _mm256_set1_epi8(-5), ones = _mm256_set1_epi16(1);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 8
    for (int i = 0; i < kSums; ++i) {
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a[i], b), ones));
      asm volatile("" : "+v"(a[i]));
    }
  }
  __m256i total = acc[0];
  for (int i = 1; i < kSums; ++i) total = _mm256_add_epi32(total, acc[i]);
  asm volatile("" : : "v"(total));
  return steps * kSums * 32;
}

MODRWKV_AVX2 void VecReluSquare(float* x, int64_t n) {
  Map(x, n, [](__m256 v) MODRWKV_AVX2 {
    const __m256 t = _mm256_max_ps(v, _mm256_setzero_ps());
    return _mm256_mul_ps(t, t);
  });
}
MODRWKV_AVX2 void VecTanh(float* x, int64_t n) {
  // As AVX-512: 2 sigmoid(2x) - 1, and x - x^3/3 for |x| < 2^-7.
  Map(x, n, [](__m256 v) MODRWKV_AVX2 {
    const __m256 t = _mm256_fmsub_ps(Set(2.0f), Sigmoid(_mm256_add_ps(v, v)), Set(1.0f));
    const __m256 small =
        _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_mul_ps(v, v), v), Set(1.0f / 3.0f), v);
    const __m256 abs = _mm256_andnot_ps(Set(-0.0f), v);
    return _mm256_blendv_ps(t, small, _mm256_cmp_ps(abs, Set(0.0078125f), _CMP_LT_OQ));
  });
}

}  // namespace avx2

}  // namespace modrwkv::cpu

#endif  // __x86_64__

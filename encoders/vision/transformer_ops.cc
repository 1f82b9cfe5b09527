// Shared transformer encoder ops on the CPU backend (see transformer_ops.h).
#include "encoders/vision/transformer_ops.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"

// The element-wise loops below are plain C++ that the compiler vectorises; on x86 it builds them
// for AVX-512, AVX2 and the baseline and picks one at load time (ifunc), as the build targets the
// baseline ISA only. Without this, softmax and GELU took ~20% of a Whisper forward. Not under
// ThreadSanitizer: the ifunc resolver is instrumented and runs before the TSan runtime is up,
// which crashes the process at load (see engine/sampling/simd_kernels_inl.h).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_THREAD__)
#define MODRWKV_VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MODRWKV_VEC_CLONES
#endif

namespace modrwkv::encoders {

void AddBias(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      float* row = y + static_cast<int64_t>(r) * n;
      for (int i = 0; i < n; ++i) row[i] += bias[i];
    }
  });
}

void SetRows(float* y, int rows, int n, const float* bias, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      std::memcpy(y + static_cast<int64_t>(r) * n, bias, static_cast<size_t>(n) * 4);
    }
  });
}

void LayerNormRows(const float* x, float* y, int rows, int n, const std::vector<float>& w,
                   const std::vector<float>& b, float eps, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      const int64_t o = static_cast<int64_t>(r) * n;
      cpu::LayerNorm(x + o, w.data(), b.data(), n, eps, y + o);
    }
  });
}

namespace {

// 0.5 x (1 + erf(x / sqrt 2)) with erfc from Numerical Recipes' Chebyshev fit (relative error
// < 1.2e-7 everywhere): erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0. Written as
// loops the compiler vectorises around the engine's SIMD exp; std::erf is a scalar call and cost
// ~10% of a Whisper forward. x < 0 uses 0.5 x erfc(|z|) directly, so no cancellation.
MODRWKV_VEC_CLONES void GeluErf(float* x, int n, float* tmp) {
  for (int i = 0; i < n; ++i) {
    const float z = std::abs(x[i]) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    const float p =
        -1.26551223f +
        t * (1.00002368f +
             t * (0.37409196f +
                  t * (0.09678418f +
                       t * (-0.18628806f +
                            t * (0.27886807f + t * (-1.13520398f +
                                                    t * (1.48851587f + t * (-0.82215223f +
                                                                            t * 0.17087277f))))))));
    tmp[i] = p - z * z;
  }
  cpu::VecExp(tmp, n);
  for (int i = 0; i < n; ++i) {
    const float z = std::abs(x[i]) * 0.70710678118654752f;
    const float erfc = tmp[i] / (1.0f + 0.5f * z);
    const float half = 0.5f * x[i] * erfc;
    x[i] = x[i] >= 0 ? x[i] - half : half;
  }
}

}  // namespace

std::optional<Activation> ActivationByName(std::string_view name) {
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "quick_gelu") return Activation::kQuickGelu;
  return std::nullopt;
}

void ApplyActivation(Activation act, float* x, int n, float* tmp) {
  switch (act) {
    case Activation::kQuickGelu:
      for (int i = 0; i < n; ++i) tmp[i] = 1.702f * x[i];
      cpu::VecSigmoid(tmp, n);
      for (int i = 0; i < n; ++i) x[i] *= tmp[i];
      return;
    case Activation::kGeluErf:
      GeluErf(x, n, tmp);
      return;
    case Activation::kGeluTanh:
      for (int i = 0; i < n; ++i) {
        const float v = x[i];
        tmp[i] = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      }
      cpu::VecTanh(tmp, n);
      for (int i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + tmp[i]);
      return;
  }
}

void ActivationRows(Activation act, float* x, int rows, int n, float* scratch,
                    int64_t scratch_per_thread, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int thread) {
    float* tmp = scratch + static_cast<int64_t>(thread) * scratch_per_thread;
    for (int r = r0; r < r1; ++r) ApplyActivation(act, x + static_cast<int64_t>(r) * n, n, tmp);
  });
}

namespace {

// Max and sum with 16 independent lanes (a fixed order, so the compiler may vectorise them).
MODRWKV_VEC_CLONES float MaxOf(const float* s, int n) {
  float acc[16];
  for (float& a : acc) a = -std::numeric_limits<float>::infinity();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] = s[i + j] > acc[j] ? s[i + j] : acc[j];
  }
  float m = -std::numeric_limits<float>::infinity();
  for (float a : acc) m = std::max(m, a);
  for (; i < n; ++i) m = std::max(m, s[i]);
  return m;
}

MODRWKV_VEC_CLONES float SumOf(const float* s, int n) {
  float acc[16] = {};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += s[i + j];
  }
  float sum = 0;
  for (float a : acc) sum += a;
  for (; i < n; ++i) sum += s[i];
  return sum;
}

MODRWKV_VEC_CLONES void ScaleShift(float* s, int n, float mul, float sub) {
  for (int i = 0; i < n; ++i) s[i] = s[i] * mul - sub;
}

MODRWKV_VEC_CLONES void Scale(float* s, int n, float mul) {
  for (int i = 0; i < n; ++i) s[i] *= mul;
}

}  // namespace

void ScaledSoftmax(float* s, int n, float scale) {
  // max(scale * s_i) = scale * max(s_i) exactly for scale > 0 (rounding is monotonic).
  const float m = MaxOf(s, n);
  ScaleShift(s, n, scale, m * scale);
  cpu::VecExp(s, n);
  Scale(s, n, 1.0f / SumOf(s, n));
}

double EncoderLayerShape::Flops() const {
  const double t = tokens, d = dim, f = ffn;
  return 2.0 * t * (4 * d * d + 2 * d * f) + 4.0 * t * t * d;
}

namespace {

// Query rows per attention task: the task's scores [rows][t] stay in the L2 cache, and a long
// sequence (Whisper's 1500 frames) gives enough tasks for every thread.
constexpr int kQueryBlock = 96;

}  // namespace

int64_t LayerScratchPerThread(const EncoderLayerShape& s) {
  const int64_t t = s.tokens, q = std::min<int64_t>(t, kQueryBlock);
  return std::max<int64_t>(q * (t + std::max<int64_t>(t, s.head_dim())), s.ffn);
}

EncoderScratch::EncoderScratch(const EncoderLayerShape& s, int rows, int threads)
    : per_thread(LayerScratchPerThread(s)),
      h(static_cast<size_t>(rows) * s.dim),
      qkv(static_cast<size_t>(rows) * 3 * s.dim),
      attn(static_cast<size_t>(rows) * s.dim),
      mlp(static_cast<size_t>(rows) * s.ffn),
      scores(static_cast<size_t>(threads) * per_thread) {}

void SelfAttention(const EncoderLayerShape& sh, int batch, const float* qkv, float* out,
                   float* scores, int64_t per_thread, cpu::ThreadPool* pool) {
  const int d = sh.dim, t = sh.tokens, heads = sh.heads, hd = sh.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // K and V^T of every (sequence, head), packed as if they were weights ([t, hd] and [hd, t]).
  std::vector<cpu::Matrix> k_mats(static_cast<size_t>(batch) * heads);
  std::vector<cpu::Matrix> v_mats(k_mats.size());
  pool->ParallelFor(int64_t{batch} * heads, [&](int64_t task, int) {
    const int b = static_cast<int>(task / heads), head = static_cast<int>(task % heads);
    const float* base = qkv + static_cast<int64_t>(b) * t * 3 * d + head * hd;
    std::vector<float> kv(static_cast<size_t>(t) * hd);
    const TensorView view{"", DType::kF32, {t, hd}, kv.data(), kv.size() * 4};
    auto gather = [&](const float* src) {  // head's [t][hd] slice of k or v, made contiguous
      for (int i = 0; i < t; ++i) {
        std::memcpy(kv.data() + static_cast<int64_t>(i) * hd, src + static_cast<int64_t>(i) * 3 * d,
                    static_cast<size_t>(hd) * 4);
      }
    };
    gather(base + d);
    k_mats[task] = cpu::MakeMatrix(view, false, cpu::WType::kF32, cpu::Layout::kPanels);
    gather(base + 2 * d);
    v_mats[task] = cpu::MakeMatrix(view, true, cpu::WType::kF32, cpu::Layout::kPanels);
  });
  // One task per (sequence, head, block of query rows): S = Q K^T, softmax, O = P V, both
  // products on the panel GEMM (each output row depends only on its own query row).
  const int blocks = (t + kQueryBlock - 1) / kQueryBlock;
  pool->ParallelFor(int64_t{batch} * heads * blocks, [&](int64_t task, int thread) {
    const int64_t bh = task / blocks;
    const int b = static_cast<int>(bh / heads), head = static_cast<int>(bh % heads);
    const int i0 = static_cast<int>(task % blocks) * kQueryBlock;
    const int rows = std::min(kQueryBlock, t - i0);
    const float* q = qkv + (static_cast<int64_t>(b) * t + i0) * 3 * d + head * hd;
    float* s = scores + per_thread * thread;         // [rows][t]
    float* xp = s + static_cast<int64_t>(rows) * t;  // packed rows, rows * max(t, hd) floats
    const cpu::Matrix& km = k_mats[bh];
    const cpu::Matrix& vm = v_mats[bh];
    cpu::PackRows(q, 3 * d, rows, hd, xp);
    cpu::PanelGemm(cpu::WType::kF32, km.data(), nullptr, hd, t, 0, km.panels(), xp, rows, s, t,
                   false);
    for (int i = 0; i < rows; ++i) {
      float* si = s + static_cast<int64_t>(i) * t;
      const int n = sh.causal ? i0 + i + 1 : t;
      ScaledSoftmax(si, n, scale);
      std::fill(si + n, si + t, 0.0f);
    }
    cpu::PackRows(s, t, rows, t, xp);
    cpu::PanelGemm(cpu::WType::kF32, vm.data(), nullptr, t, hd, 0, vm.panels(), xp, rows,
                   out + (static_cast<int64_t>(b) * t + i0) * d + head * hd, d, false);
  });
}

void RunPreLnLayer(const EncoderLayerWeights& l, const EncoderLayerShape& s, int batch, float* x,
                   EncoderScratch* sc, cpu::ThreadPool* pool, cpu::LinearRunner* lin) {
  const int d = s.dim, f = s.ffn, rows = batch * s.tokens;
  LayerNormRows(x, sc->h.data(), rows, d, l.ln1_w, l.ln1_b, s.eps, pool);
  SetRows(sc->qkv.data(), rows, 3 * d, l.qkv_b.data(), pool);
  lin->Run(l.qkv, sc->h.data(), d, rows, sc->qkv.data(), 3 * d, /*accumulate=*/true);
  SelfAttention(s, batch, sc->qkv.data(), sc->attn.data(), sc->scores.data(), sc->per_thread, pool);
  AddBias(x, rows, d, l.out_b.data(), pool);
  lin->Run(l.out, sc->attn.data(), d, rows, x, d, /*accumulate=*/true);

  LayerNormRows(x, sc->h.data(), rows, d, l.ln2_w, l.ln2_b, s.eps, pool);
  SetRows(sc->mlp.data(), rows, f, l.fc1_b.data(), pool);
  lin->Run(l.fc1, sc->h.data(), d, rows, sc->mlp.data(), f, /*accumulate=*/true);
  // The activation's scratch reuses the attention scores (per_thread >= F floats each).
  ActivationRows(s.act, sc->mlp.data(), rows, f, sc->scores.data(), sc->per_thread, pool);
  AddBias(x, rows, d, l.fc2_b.data(), pool);
  lin->Run(l.fc2, sc->mlp.data(), f, rows, x, d, /*accumulate=*/true);
}

}  // namespace modrwkv::encoders

// WavlmEncoder's forward pass. Convolutions are GEMMs over overlapping rows of time-major
// activations ([frames][channels]: the window of output t is one contiguous run of kernel*in
// floats, so no im2col copy is needed); transformer projections take the rows of all clips
// together; attention runs one task per (clip, head) on the same panel GEMM.
#include "encoders/speech/wavlm_encoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::encoders {
namespace {

constexpr int kRowsPerTask = 16;
// Floats of packed rows one GEMM task works on (about 1 MB: the row block stays in L2 while
// it meets every panel).
constexpr int64_t kPackFloats = 256 * 1024;

template <typename Fn>
void ForRows(cpu::ThreadPool* pool, int rows, Fn&& fn) {
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  pool->ParallelFor(tasks, [&](int64_t t, int thread) {
    const int r0 = static_cast<int>(t) * kRowsPerTask;
    fn(r0, std::min(rows, r0 + kRowsPerTask), thread);
  });
}

int RowBlock(int in) {
  const int64_t rb = kPackFloats / std::max(in, 1) / cpu::kMaxTileRows * cpu::kMaxTileRows;
  return static_cast<int>(std::clamp<int64_t>(rb, cpu::kMaxTileRows, 240));
}

// Packed-row floats one thread needs for a GEMM with `in` inputs.
int64_t PackFloatsFor(int in) { return int64_t{RowBlock(in)} * in; }

// y[r*ldy + o] (=|+=) sum_i x[r*ldx + i] * W[o][i]: tasks are (row block, panel range) pairs,
// each packing its rows into its thread's part of `pack` (PackFloatsFor(in) floats a thread).
// Rows may overlap (ldx < in): that is how the convolutions read their windows.
void Gemm(const cpu::Matrix& w, const float* x, int64_t ldx, int rows, float* y, int64_t ldy,
          bool accumulate, float* pack, cpu::ThreadPool* pool) {
  if (rows <= 0) return;
  const int in = w.cols, panels = w.panels(), threads = pool->size();
  const int64_t stride = PackFloatsFor(in);
  // Enough row blocks for ~4 tasks a thread (blocks of at least 48 rows keep 24 flops per byte
  // of weight read from L3); panel ranges split only when rows are too few for that, since
  // each range packs the block's rows again.
  const int per_task = (rows + 4 * threads - 1) / (4 * threads);
  const int rb = std::min(RowBlock(in), std::max(48, (per_task + 11) / 12 * 12));
  const int blocks = (rows + rb - 1) / rb;
  const int split = std::clamp((2 * threads + blocks - 1) / blocks, 1, panels);
  pool->ParallelFor(int64_t{blocks} * split, [&](int64_t task, int thread) {
    const int block = static_cast<int>(task / split), part = static_cast<int>(task % split);
    const int r0 = block * rb, n = std::min(rb, rows - r0);
    float* xp = pack + stride * thread;
    cpu::PackRows(x + r0 * ldx, ldx, n, in, xp);
    const int p0 = panels * part / split, p1 = panels * (part + 1) / split;
    cpu::PanelGemm(w.type, w.data(), nullptr, in, w.rows, p0, p1, xp, n, y + r0 * ldy, ldy,
                   accumulate);
  });
}

void SetRows(float* y, int rows, int n, const float* v, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) std::memcpy(y + static_cast<int64_t>(r) * n, v, n * 4);
  });
}

void AddRows(float* y, int rows, int n, const float* v, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      float* row = y + static_cast<int64_t>(r) * n;
      for (int i = 0; i < n; ++i) row[i] += v[i];
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

// GELU, erf form (transformers' "gelu"), in place over n floats; tmp holds n floats.
// erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) with the exponential on the engine's
// vector kernel: std::erf per element would cost as much as a conv layer's GEMM.
void Gelu(float* x, int64_t n, float* tmp) {
  for (int64_t i = 0; i < n; ++i) tmp[i] = -0.5f * x[i] * x[i];  // -(x/sqrt2)^2
  cpu::VecExp(tmp, n);
  for (int64_t i = 0; i < n; ++i) {
    const float z = std::fabs(x[i]) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.3275911f * z);
    const float poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float e = 1.0f - poly * tmp[i];  // erf(|x|/sqrt2)
    x[i] = 0.5f * x[i] * (1.0f + std::copysign(e, x[i]));
  }
}

void GeluRows(float* x, int rows, int n, float* tmp, int64_t tmp_stride, cpu::ThreadPool* pool) {
  ForRows(pool, rows, [&](int r0, int r1, int thread) {
    Gelu(x + static_cast<int64_t>(r0) * n, static_cast<int64_t>(r1 - r0) * n,
         tmp + tmp_stride * thread);
  });
}

// GroupNorm with one group per channel over x [t][c] (time-major): every channel is normalised
// over time. Sums in double, per thread over time chunks.
void GroupNormChannels(float* x, int t, int c, const std::vector<float>& w,
                       const std::vector<float>& b, float* tmp, int64_t tmp_stride,
                       cpu::ThreadPool* pool) {
  const int threads = pool->size();
  std::vector<double> part(static_cast<size_t>(threads) * c);
  auto chunked = [&](auto&& per_row) {
    std::fill(part.begin(), part.end(), 0.0);
    pool->ParallelFor(threads, [&](int64_t k, int) {
      double* acc = part.data() + k * c;
      const int r0 = static_cast<int>(int64_t{t} * k / threads);
      const int r1 = static_cast<int>(int64_t{t} * (k + 1) / threads);
      for (int r = r0; r < r1; ++r) per_row(x + static_cast<int64_t>(r) * c, acc);
    });
    std::vector<double> sum(c, 0.0);
    for (int k = 0; k < threads; ++k)
      for (int i = 0; i < c; ++i) sum[i] += part[static_cast<size_t>(k) * c + i];
    return sum;
  };
  std::vector<double> mean = chunked([&](const float* row, double* acc) {
    for (int i = 0; i < c; ++i) acc[i] += row[i];
  });
  for (double& m : mean) m /= t;
  std::vector<double> var = chunked([&](const float* row, double* acc) {
    for (int i = 0; i < c; ++i) {
      const double d = row[i] - mean[i];
      acc[i] += d * d;
    }
  });
  std::vector<float> scale(c), shift(c);
  for (int i = 0; i < c; ++i) {
    const double inv = 1.0 / std::sqrt(var[i] / t + kWavlmConvNormEps);
    scale[i] = static_cast<float>(w[i] * inv);
    shift[i] = static_cast<float>(b[i] - mean[i] * w[i] * inv);
  }
  ForRows(pool, t, [&](int r0, int r1, int thread) {
    for (int r = r0; r < r1; ++r) {
      float* row = x + static_cast<int64_t>(r) * c;
      for (int i = 0; i < c; ++i) row[i] = row[i] * scale[i] + shift[i];
    }
    Gelu(x + static_cast<int64_t>(r0) * c, static_cast<int64_t>(r1 - r0) * c,
         tmp + tmp_stride * thread);
  });
}

void Softmax(float* s, int n) {
  float m = s[0];
  for (int i = 1; i < n; ++i) m = std::max(m, s[i]);
  for (int i = 0; i < n; ++i) s[i] -= m;
  cpu::VecExp(s, n);
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += s[i];
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) s[i] *= inv;
}

int Panels(int n) { return (n + cpu::kPanelCols - 1) / cpu::kPanelCols; }

// Attention scratch of one thread: K packed as panels [Panels(t)][hd][32], V as panels
// [Panels(hd)][t][32], scores [t][t], packed rows t*max(t, hd).
int64_t AttentionFloats(int t, int hd) {
  return int64_t{Panels(t)} * 32 * hd + int64_t{Panels(hd)} * 32 * t + int64_t{t} * t +
         int64_t{t} * std::max(t, hd);
}

}  // namespace

int WavlmRelativeBucket(int relative, int num_buckets, int max_distance) {
  const int half = num_buckets / 2;
  int bucket = relative > 0 ? half : 0;
  const int d = std::abs(relative);
  const int max_exact = half / 2;
  if (d < max_exact) return bucket + d;
  // float32 steps of the PyTorch code: log(d / max_exact) / log(max_distance / max_exact)
  // * (half - max_exact), truncated.
  float v = std::log(static_cast<float>(d) / static_cast<float>(max_exact));
  v = v / static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact));
  v = v * static_cast<float>(half - max_exact);
  const int64_t large = static_cast<int64_t>(static_cast<float>(max_exact) + v);
  return bucket + static_cast<int>(std::min<int64_t>(large, half - 1));
}

// Per-call buffers (thread-compatibility: nothing is shared between calls).
struct WavlmEncoder::Scratch {
  cpu::AlignedBuffer<float> feat_a, feat_b;  // conv activations, [frames_i][conv_dim_i]
  cpu::AlignedBuffer<float> x, h, qkv, attn, mlp;
  cpu::AlignedBuffer<float> pad;   // [G][frames + K - 1][D/G]: padded positional conv input
  cpu::AlignedBuffer<float> pack;  // [threads][pack_stride]
  int64_t pack_stride = 0;
  cpu::AlignedBuffer<float> tmp;  // [threads][tmp_stride]: GELU temporaries, attention scratch
  int64_t tmp_stride = 0;
  std::vector<float> gate;  // [batch][heads][frames]
};

double WavlmEncoder::FlopsPerClip(int num_samples) const {
  const WavlmConfig& c = config_;
  double flops = 0;
  int64_t n = num_samples, in = 1;
  for (int i = 0; i < c.conv_layers(); ++i) {
    n = n < c.conv_kernel[i] ? 0 : (n - c.conv_kernel[i]) / c.conv_stride[i] + 1;
    flops += 2.0 * n * c.conv_dim[i] * in * c.conv_kernel[i];
    in = c.conv_dim[i];
  }
  const double t = static_cast<double>(n), d = c.hidden_size, f = c.intermediate_size;
  flops += 2.0 * t * in * d;  // projection
  flops += 2.0 * t * d * (d / c.num_conv_pos_embedding_groups) * c.num_conv_pos_embeddings;
  flops += c.num_hidden_layers * (2.0 * t * (4 * d * d + 2 * d * f) + 4.0 * t * t * d);
  return flops;
}

void WavlmEncoder::Features(const float* clip, int num_samples, float* x, Scratch* s,
                            cpu::ThreadPool* pool) const {
  const WavlmConfig& c = config_;
  const float* src = clip;
  int frames = num_samples;
  float* bufs[2] = {s->feat_a.data(), s->feat_b.data()};
  for (int i = 0; i < c.conv_layers(); ++i) {
    const WavlmConv& cv = stem_.convs[i];
    const int out_frames = (frames - cv.kernel) / cv.stride + 1;
    float* dst = bufs[i % 2];
    if (!cv.bias.empty()) SetRows(dst, out_frames, cv.out, cv.bias.data(), pool);
    Gemm(cv.w, src, int64_t{cv.stride} * cv.in, out_frames, dst, cv.out, !cv.bias.empty(),
         s->pack.data(), pool);
    if (c.feat_extract_norm == "group") {
      if (i == 0) {
        GroupNormChannels(dst, out_frames, cv.out, cv.norm_w, cv.norm_b, s->tmp.data(),
                          s->tmp_stride, pool);
      } else {
        GeluRows(dst, out_frames, cv.out, s->tmp.data(), s->tmp_stride, pool);
      }
    } else {
      LayerNormRows(dst, dst, out_frames, cv.out, cv.norm_w, cv.norm_b, kWavlmConvNormEps, pool);
      GeluRows(dst, out_frames, cv.out, s->tmp.data(), s->tmp_stride, pool);
    }
    src = dst;
    frames = out_frames;
  }
  // Feature projection: LayerNorm (in place: the conv output is not needed afterwards), Linear.
  float* feat = bufs[(c.conv_layers() - 1) % 2];
  const int cl = c.conv_dim.back();
  LayerNormRows(feat, feat, frames, cl, stem_.proj_ln_w, stem_.proj_ln_b, c.layer_norm_eps, pool);
  SetRows(x, frames, c.hidden_size, stem_.proj_b.data(), pool);
  Gemm(stem_.proj, feat, cl, frames, x, c.hidden_size, /*accumulate=*/true, s->pack.data(), pool);
}

void WavlmEncoder::AddPositions(float* x, int batch, int frames, Scratch* s,
                                cpu::ThreadPool* pool) const {
  const WavlmConfig& c = config_;
  const int d = c.hidden_size, groups = c.num_conv_pos_embedding_groups;
  const int cg = d / groups, k = c.num_conv_pos_embeddings, pad = k / 2;
  // Output t reads padded rows t .. t+k-1 (input rows t-pad .. t-pad+k-1); PyTorch's extra
  // output of an even kernel is the one dropped, so `frames` rows are computed in both cases.
  const int64_t prow = frames + k - 1;
  float* pos = s->h.data();  // [batch*frames][D]
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + int64_t{b} * frames * d;
    pool->ParallelFor(groups, [&](int64_t g, int) {
      float* pg = s->pad.data() + g * prow * cg;
      std::memset(pg, 0, static_cast<size_t>(pad) * cg * 4);
      for (int t = 0; t < frames; ++t) {
        std::memcpy(pg + (int64_t{t} + pad) * cg, xb + int64_t{t} * d + g * cg, cg * 4);
      }
      std::memset(pg + (int64_t{frames} + pad) * cg, 0,
                  static_cast<size_t>(prow - frames - pad) * cg * 4);
    });
    for (int g = 0; g < groups; ++g) {
      Gemm(stem_.pos[g], s->pad.data() + g * prow * cg, cg, frames,
           pos + int64_t{b} * frames * d + g * cg, d, /*accumulate=*/false, s->pack.data(), pool);
    }
  }
  const int rows = batch * frames;
  ForRows(pool, rows, [&](int r0, int r1, int thread) {
    float* p = pos + int64_t{r0} * d;
    const int64_t n = int64_t{r1 - r0} * d;
    for (int r = r0; r < r1; ++r) {
      float* row = pos + int64_t{r} * d;
      for (int i = 0; i < d; ++i) row[i] += stem_.pos_b[i];
    }
    Gelu(p, n, s->tmp.data() + s->tmp_stride * thread);
    float* xr = x + int64_t{r0} * d;
    for (int64_t i = 0; i < n; ++i) xr[i] += p[i];
  });
}

void WavlmEncoder::Attention(const Layer& l, const float* h, int batch, int frames,
                             const float* rel, float* attn, Scratch* s,
                             cpu::ThreadPool* pool) const {
  const WavlmConfig& c = config_;
  const int d = c.hidden_size, heads = c.num_attention_heads, hd = c.head_dim(), t = frames;
  const int rows = batch * t;
  // The gate of the relative bias, per (clip, head, query), from the attention input h:
  // two sums of four outputs of gru_rel_pos_linear, each through a sigmoid.
  ForRows(pool, rows, [&](int r0, int r1, int) {
    for (int r = r0; r < r1; ++r) {
      const int b = r / t, i = r % t;
      for (int head = 0; head < heads; ++head) {
        const float* v = h + int64_t{r} * d + head * hd;
        float p[8];
        for (int k = 0; k < 8; ++k) {
          const float* w = l.gate_w.data() + k * hd;
          float acc = 0;
          for (int j = 0; j < hd; ++j) acc += w[j] * v[j];
          p[k] = acc + l.gate_b[k];
        }
        const float ga = 1.0f / (1.0f + std::exp(-(p[0] + p[1] + p[2] + p[3])));
        const float gb = 1.0f / (1.0f + std::exp(-(p[4] + p[5] + p[6] + p[7])));
        s->gate[(int64_t{b} * heads + head) * t + i] = ga * (gb * l.gate_const[head] - 1.0f) + 2.0f;
      }
    }
  });
  // qkv = h W^T + b for every row of every clip.
  SetRows(s->qkv.data(), rows, 3 * d, l.qkv_b.data(), pool);
  Gemm(l.qkv, h, d, rows, s->qkv.data(), 3 * d, /*accumulate=*/true, s->pack.data(), pool);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int kpanels = Panels(t), vpanels = Panels(hd);
  pool->ParallelFor(int64_t{batch} * heads, [&](int64_t task, int thread) {
    const int b = static_cast<int>(task / heads), head = static_cast<int>(task % heads);
    const float* q = s->qkv.data() + int64_t{b} * t * 3 * d + head * hd;
    const float* k = q + d;
    const float* v = q + 2 * d;
    float* kp = s->tmp.data() + s->tmp_stride * thread;  // K^T as weight panels
    float* vp = kp + int64_t{kpanels} * 32 * hd;         // V^T as weight panels
    float* sc = vp + int64_t{vpanels} * 32 * t;          // scores [t][t]
    float* xp = sc + int64_t{t} * t;                     // packed rows
    // Panel p of K^T: for each feature i, the 32 keys p*32 .. p*32+31 (zero past t).
    for (int p = 0; p < kpanels; ++p) {
      float* panel = kp + int64_t{p} * 32 * hd;
      for (int cc = 0; cc < 32; ++cc) {
        const int j = p * 32 + cc;
        if (j >= t) {
          for (int i = 0; i < hd; ++i) panel[i * 32 + cc] = 0.0f;
          continue;
        }
        const float* kr = k + int64_t{j} * 3 * d;
        for (int i = 0; i < hd; ++i) panel[i * 32 + cc] = kr[i];
      }
    }
    // Panel p of V^T: for each key j, the 32 features p*32 .. p*32+31 (zero past hd).
    for (int p = 0; p < vpanels; ++p) {
      float* panel = vp + int64_t{p} * 32 * t;
      const int n = std::min(32, hd - p * 32);
      for (int j = 0; j < t; ++j) {
        std::memcpy(panel + int64_t{j} * 32, v + int64_t{j} * 3 * d + p * 32, n * 4);
        std::fill(panel + int64_t{j} * 32 + n, panel + int64_t{j} * 32 + 32, 0.0f);
      }
    }
    cpu::PackRows(q, 3 * d, t, hd, xp);
    cpu::PanelGemm(cpu::WType::kF32, kp, nullptr, hd, t, 0, kpanels, xp, t, sc, t, false);
    const float* g = s->gate.data() + (int64_t{b} * heads + head) * t;
    const float* rh = rel + int64_t{head} * (2 * t - 1);
    for (int i = 0; i < t; ++i) {
      float* row = sc + int64_t{i} * t;
      const float* bias = rh + (t - 1 - i);  // bias[j] = rel[j - i + t - 1]
      for (int j = 0; j < t; ++j) row[j] = row[j] * scale + g[i] * bias[j];
      Softmax(row, t);
    }
    cpu::PackRows(sc, t, t, t, xp);
    cpu::PanelGemm(cpu::WType::kF32, vp, nullptr, t, hd, 0, vpanels, xp, t,
                   attn + int64_t{b} * t * d + head * hd, d, false);
  });
}

void WavlmEncoder::RunLayer(const Layer& l, float* x, int batch, int frames, const float* rel,
                            Scratch* s, cpu::ThreadPool* pool) const {
  const WavlmConfig& c = config_;
  const int d = c.hidden_size, f = c.intermediate_size, rows = batch * frames;
  const float eps = c.layer_norm_eps;
  float* h = s->h.data();
  if (c.do_stable_layer_norm) {
    // x += Attn(LN1(x)); x += FF(LN2(x))
    LayerNormRows(x, h, rows, d, l.ln1_w, l.ln1_b, eps, pool);
    Attention(l, h, batch, frames, rel, s->attn.data(), s, pool);
    AddRows(x, rows, d, l.out_b.data(), pool);
    Gemm(l.out, s->attn.data(), d, rows, x, d, true, s->pack.data(), pool);
    LayerNormRows(x, h, rows, d, l.ln2_w, l.ln2_b, eps, pool);
  } else {
    // x = LN1(x + Attn(x)); x = LN2(x + FF(x))
    Attention(l, x, batch, frames, rel, s->attn.data(), s, pool);
    AddRows(x, rows, d, l.out_b.data(), pool);
    Gemm(l.out, s->attn.data(), d, rows, x, d, true, s->pack.data(), pool);
    LayerNormRows(x, x, rows, d, l.ln1_w, l.ln1_b, eps, pool);
    h = x;
  }
  SetRows(s->mlp.data(), rows, f, l.fc1_b.data(), pool);
  Gemm(l.fc1, h, d, rows, s->mlp.data(), f, true, s->pack.data(), pool);
  GeluRows(s->mlp.data(), rows, f, s->tmp.data(), s->tmp_stride, pool);
  AddRows(x, rows, d, l.fc2_b.data(), pool);
  Gemm(l.fc2, s->mlp.data(), f, rows, x, d, true, s->pack.data(), pool);
  if (!c.do_stable_layer_norm) LayerNormRows(x, x, rows, d, l.ln2_w, l.ln2_b, eps, pool);
}

absl::Status WavlmEncoder::UseLayerStack(const WavlmLayerFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(layer_stack_, factory(layers_, config_));
  std::vector<Layer>().swap(layers_);  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status WavlmEncoder::UseStem(const WavlmStemFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(stem_runner_, factory(stem_, config_));
  stem_ = WavlmStemWeights();  // the runner holds its own copy
  return absl::OkStatus();
}

absl::Status WavlmEncoder::Forward(absl::Span<const float> samples, int batch, int num_samples,
                                   absl::Span<float> out, cpu::ThreadPool* pool) const {
  const WavlmConfig& c = config_;
  if (batch <= 0) return absl::InvalidArgumentError(absl::StrCat("batch ", batch, " must be > 0"));
  if (static_cast<int64_t>(samples.size()) != int64_t{batch} * num_samples) {
    return absl::InvalidArgumentError(absl::StrCat("samples hold ", samples.size(),
                                                   " floats, expected [", batch, ",", num_samples,
                                                   "] = ", int64_t{batch} * num_samples));
  }
  const int frames = OutputFrames(num_samples);
  if (frames <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a clip of ", num_samples, " samples is too short for the feature encoder (it gives ",
        "no frame); expected at least ", c.SamplesPerFrame(), " samples"));
  }
  const int d = c.hidden_size, f = c.intermediate_size, hd = c.head_dim();
  if (static_cast<int64_t>(out.size()) != int64_t{batch} * frames * d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output holds ", out.size(), " floats, expected [", batch, ",", frames, ",", d, "]"));
  }
  const int rows = batch * frames;
  const int64_t rows64 = rows;
  Scratch s;
  int64_t feat = 0, max_in = d;
  int64_t n = num_samples, in = 1;
  for (int i = 0; i < c.conv_layers(); ++i) {
    n = (n - c.conv_kernel[i]) / c.conv_stride[i] + 1;
    feat = std::max(feat, n * c.conv_dim[i]);
    max_in = std::max<int64_t>(max_in, in * c.conv_kernel[i]);
    in = c.conv_dim[i];
  }
  const int cg = d / c.num_conv_pos_embedding_groups, k = c.num_conv_pos_embeddings;
  max_in = std::max<int64_t>({max_in, in, f, int64_t{k} * cg});
  if (!stem_runner_) {  // the stem's own buffers
    s.feat_a.Resize(static_cast<size_t>(feat));
    s.feat_b.Resize(static_cast<size_t>(feat));
    s.pad.Resize(static_cast<size_t>((int64_t{frames} + k - 1) * d));
  }
  s.x.Resize(static_cast<size_t>(rows64 * d));
  s.h.Resize(static_cast<size_t>(rows64 * d));
  if (!layer_stack_) {  // the layers' own buffers
    s.qkv.Resize(static_cast<size_t>(rows64 * 3 * d));
    s.attn.Resize(static_cast<size_t>(rows64 * d));
    s.mlp.Resize(static_cast<size_t>(rows64 * f));
  }
  s.pack_stride = 0;
  for (int64_t width : {max_in, in, int64_t{d}, int64_t{f}, int64_t{k} * cg}) {
    s.pack_stride = std::max(s.pack_stride, PackFloatsFor(static_cast<int>(width)));
  }
  for (int i = 0, w = 1; i < c.conv_layers(); w = c.conv_dim[i], ++i) {
    s.pack_stride = std::max(s.pack_stride, PackFloatsFor(w * c.conv_kernel[i]));
  }
  s.pack.Resize(static_cast<size_t>(s.pack_stride * pool->size()));
  // GELU temporaries cover ForRows chunks of the widest activation; attention's its scratch.
  const int64_t widest =
      std::max<int64_t>({f, d, *std::max_element(c.conv_dim.begin(), c.conv_dim.end())});
  s.tmp_stride = std::max(kRowsPerTask * widest, layer_stack_ ? 0 : AttentionFloats(frames, hd));
  // GroupNorm's GELU runs over ForRows chunks too (conv_dim[0] wide): covered by `widest`.
  s.tmp.Resize(static_cast<size_t>(s.tmp_stride * pool->size()));
  if (!layer_stack_) s.gate.resize(static_cast<size_t>(batch) * c.num_attention_heads * frames);

  // Layer 0's relative position bias, shared by every layer: rel[h][j - i + frames - 1].
  const int heads = c.num_attention_heads;
  std::vector<float> rel(static_cast<size_t>(heads) * (2 * frames - 1));
  for (int r = -(frames - 1); r <= frames - 1; ++r) {
    const int bucket = WavlmRelativeBucket(r, c.num_buckets, c.max_bucket_distance);
    for (int head = 0; head < heads; ++head) {
      rel[static_cast<size_t>(head) * (2 * frames - 1) + r + frames - 1] =
          rel_embed_[static_cast<size_t>(bucket) * heads + head];
    }
  }
  if (stem_runner_) {  // the layers too when they are placed (on one GPU, without the host)
    MODRWKV_RETURN_IF_ERROR(stem_runner_->RunThrough(
        samples.data(), batch, num_samples, layer_stack_.get(), frames, rel.data(), s.x.data()));
  } else {
    for (int b = 0; b < batch; ++b) {
      Features(samples.data() + int64_t{b} * num_samples, num_samples,
               s.x.data() + int64_t{b} * frames * d, &s, pool);
    }
    AddPositions(s.x.data(), batch, frames, &s, pool);
    if (!c.do_stable_layer_norm) {
      LayerNormRows(s.x.data(), s.x.data(), rows, d, stem_.ln_w, stem_.ln_b, c.layer_norm_eps,
                    pool);
    }
    if (layer_stack_) {
      MODRWKV_RETURN_IF_ERROR(layer_stack_->Run(s.x.data(), batch, frames, rel.data()));
    }
  }
  if (!layer_stack_) {
    for (const Layer& l : layers_) RunLayer(l, s.x.data(), batch, frames, rel.data(), &s, pool);
  }
  if (c.do_stable_layer_norm) {
    LayerNormRows(s.x.data(), out.data(), rows, d, final_ln_w_, final_ln_b_, c.layer_norm_eps,
                  pool);
  } else {
    std::memcpy(out.data(), s.x.data(), static_cast<size_t>(rows64 * d) * 4);
  }
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders

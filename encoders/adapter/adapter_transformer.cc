// torch nn.TransformerEncoderLayer for the adapter chain: tensors checked and packed at load, the
// forward as torch's eval path computes it (the official SpeechAdapter of JL-er/WorldRWKV 6c39cdb).
#include "encoders/adapter/adapter_transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::encoders {
namespace {

// The tensor `name`, which must have shape `want`.
absl::StatusOr<const TensorView*> Tensor(const std::map<std::string, TensorView>& tensors,
                                         const std::string& name, const std::vector<int64_t>& want,
                                         const std::string& where) {
  auto it = tensors.find(name);
  if (it == tensors.end())
    return absl::NotFoundError(absl::StrCat(
        where, ": tensor ", name, " is missing (expected shape ", ShapeToString(want), ")"));
  if (it->second.shape != want)
    return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", name, " has shape ",
                                                   it->second.ShapeString(), ", expected ",
                                                   ShapeToString(want)));
  return &it->second;
}

absl::StatusOr<std::vector<float>> Vector(const std::map<std::string, TensorView>& tensors,
                                          const std::string& name, int64_t n,
                                          const std::string& where) {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* t, Tensor(tensors, name, {n}, where));
  std::vector<float> v(static_cast<size_t>(n));
  ConvertToF32(t->dtype, t->data, v.size(), v.data());
  return v;
}

absl::StatusOr<cpu::Matrix> Weight(const std::map<std::string, TensorView>& tensors,
                                   const std::string& name, int64_t out, int64_t in,
                                   const std::string& where) {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* t, Tensor(tensors, name, {out, in}, where));
  return cpu::MakeMatrix(*t, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
}

// y[r][:] = bias + x[r][:] W^T for r < rows, or y += that when `accumulate` (a residual add).
void Dense(cpu::LinearRunner* runner, const cpu::Matrix& w, const std::vector<float>& bias,
           const float* x, int rows, float* y, bool accumulate) {
  const size_t out = static_cast<size_t>(w.rows);
  for (int r = 0; r < rows; ++r) {
    float* row = y + r * out;
    if (accumulate) {
      for (size_t o = 0; o < out; ++o) row[o] += bias[o];
    } else {
      std::memcpy(row, bias.data(), out * sizeof(float));
    }
  }
  runner->Run(w, x, w.cols, rows, y, static_cast<int64_t>(out), /*accumulate=*/true);
}

void NormRows(const std::vector<float>& g, const std::vector<float>& b, float eps, int rows, int d,
              const float* x, float* out) {
  for (int r = 0; r < rows; ++r)
    cpu::LayerNorm(x + static_cast<size_t>(r) * d, g.data(), b.data(), d, eps,
                   out + static_cast<size_t>(r) * d);
}

// Eight independent sums, so the compiler can vectorise without reassociating one chain.
float Dot(const float* a, const float* b, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

constexpr int kRowsPerTask = 16;

// attn[i][h*hd .. (h+1)*hd) = softmax_j(q_i . k_j / sqrt(hd)) v_j for every head h and row i;
// q, k, v are the column blocks [0, d), [d, 2d), [2d, 3d) of qkv [rows][3d].
void Attention(const float* qkv, int rows, int d, int heads, float* attn, cpu::ThreadPool* pool) {
  const int hd = d / heads;
  const size_t ld = static_cast<size_t>(3) * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  std::vector<float> scratch(static_cast<size_t>(pool->size()) * rows);  // [thread][rows]
  pool->ParallelFor(static_cast<int64_t>(heads) * blocks, [&](int64_t task, int thread) {
    const int h = static_cast<int>(task / blocks);
    const int r0 = static_cast<int>(task % blocks) * kRowsPerTask;
    const int r1 = std::min(rows, r0 + kRowsPerTask);
    float* p = scratch.data() + static_cast<size_t>(thread) * rows;
    const float* k = qkv + d + static_cast<size_t>(h) * hd;
    const float* v = qkv + 2 * static_cast<size_t>(d) + static_cast<size_t>(h) * hd;
    for (int i = r0; i < r1; ++i) {
      const float* q = qkv + i * ld + static_cast<size_t>(h) * hd;
      float m = -INFINITY;
      for (int j = 0; j < rows; ++j) {
        p[j] = Dot(q, k + j * ld, hd) * scale;
        m = std::max(m, p[j]);
      }
      float sum = 0;
      for (int j = 0; j < rows; ++j) {
        p[j] = std::exp(p[j] - m);
        sum += p[j];
      }
      float* o = attn + static_cast<size_t>(i) * d + static_cast<size_t>(h) * hd;
      std::fill(o, o + hd, 0.0f);
      for (int j = 0; j < rows; ++j) {
        const float* vj = v + j * ld;
        for (int c = 0; c < hd; ++c) o[c] += p[j] * vj[c];
      }
      const float inv = 1.0f / sum;
      for (int c = 0; c < hd; ++c) o[c] *= inv;
    }
  });
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TransformerLayerWeights>> LoadTransformerLayer(
    const std::map<std::string, TensorView>& tensors, const std::string& stem, int heads,
    const std::string& where) {
  auto w = std::make_shared<TransformerLayerWeights>();
  // The width comes from in_proj_weight [3d, d]; the feed-forward width from linear1 [ff, d].
  const std::string in_name = stem + ".self_attn.in_proj_weight";
  auto it = tensors.find(in_name);
  if (it == tensors.end())
    return absl::NotFoundError(
        absl::StrCat(where, ": tensor ", in_name, " is missing (expected shape [3d, d])"));
  const std::vector<int64_t>& s = it->second.shape;
  if (s.size() != 2 || s[1] < 1 || s[0] != 3 * s[1])
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": tensor ", in_name, " has shape ", it->second.ShapeString(), ", expected [3d, d]",
        s.size() == 2 && s[1] >= 1 ? absl::StrCat(" = [", 3 * s[1], ",", s[1], "]") : ""));
  const int64_t d = s[1];
  if (heads < 1 || d % heads != 0)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", heads, " heads do not divide the width ", d, " (tensor ", in_name,
                     " ", it->second.ShapeString(), "); \"heads\" must be a divisor of d"));
  const std::string l1_name = stem + ".linear1.weight";
  auto l1 = tensors.find(l1_name);
  if (l1 != tensors.end() &&
      (l1->second.shape.size() != 2 || l1->second.shape[0] < 1 || l1->second.shape[1] != d))
    return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", l1_name, " has shape ",
                                                   l1->second.ShapeString(),
                                                   ", expected [dim_feedforward, ", d, "]"));
  if (l1 == tensors.end())
    return absl::NotFoundError(absl::StrCat(
        where, ": tensor ", l1_name, " is missing (expected shape [dim_feedforward, ", d, "])"));
  const int64_t ff = l1->second.shape[0];
  w->d = static_cast<int>(d);
  w->heads = heads;
  w->ff = static_cast<int>(ff);
  const std::string sa = stem + ".self_attn.";
  MODRWKV_ASSIGN_OR_RETURN(w->in_proj, Weight(tensors, in_name, 3 * d, d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->in_proj_bias, Vector(tensors, sa + "in_proj_bias", 3 * d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->out_proj, Weight(tensors, sa + "out_proj.weight", d, d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->out_proj_bias, Vector(tensors, sa + "out_proj.bias", d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->linear1, Weight(tensors, l1_name, ff, d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->linear1_bias, Vector(tensors, stem + ".linear1.bias", ff, where));
  MODRWKV_ASSIGN_OR_RETURN(w->linear2, Weight(tensors, stem + ".linear2.weight", d, ff, where));
  MODRWKV_ASSIGN_OR_RETURN(w->linear2_bias, Vector(tensors, stem + ".linear2.bias", d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->norm1_w, Vector(tensors, stem + ".norm1.weight", d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->norm1_b, Vector(tensors, stem + ".norm1.bias", d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->norm2_w, Vector(tensors, stem + ".norm2.weight", d, where));
  MODRWKV_ASSIGN_OR_RETURN(w->norm2_b, Vector(tensors, stem + ".norm2.bias", d, where));
  return std::shared_ptr<const TransformerLayerWeights>(std::move(w));
}

void RunTransformerLayer(const TransformerLayerWeights& w, const AdapterLayerSpec& spec, int rows,
                         std::vector<float>* x, cpu::LinearRunner* runner, cpu::ThreadPool* pool) {
  const int d = w.d;
  const size_t n = static_cast<size_t>(rows) * d;
  std::vector<float> h(n), qkv(n * 3), attn(n), hid(static_cast<size_t>(rows) * w.ff);
  float* xs = x->data();
  // Self-attention block: x += out_proj(Attention(in_proj(norm_first ? norm1(x) : x))).
  const float* sa_in = xs;
  if (spec.norm_first) {
    NormRows(w.norm1_w, w.norm1_b, spec.eps, rows, d, xs, h.data());
    sa_in = h.data();
  }
  Dense(runner, w.in_proj, w.in_proj_bias, sa_in, rows, qkv.data(), /*accumulate=*/false);
  Attention(qkv.data(), rows, d, w.heads, attn.data(), pool);
  Dense(runner, w.out_proj, w.out_proj_bias, attn.data(), rows, xs, /*accumulate=*/true);
  if (!spec.norm_first) NormRows(w.norm1_w, w.norm1_b, spec.eps, rows, d, xs, xs);
  // Feed-forward block: x += linear2(act(linear1(norm_first ? norm2(x) : x))).
  const float* ff_in = xs;
  if (spec.norm_first) {
    NormRows(w.norm2_w, w.norm2_b, spec.eps, rows, d, xs, h.data());
    ff_in = h.data();
  }
  Dense(runner, w.linear1, w.linear1_bias, ff_in, rows, hid.data(), /*accumulate=*/false);
  if (spec.ffn_gelu) {
    for (float& v : hid) v = 0.5f * v * (1 + std::erf(v * 0.7071067811865476f));
  } else {
    for (float& v : hid) v = v > 0 ? v : 0;
  }
  Dense(runner, w.linear2, w.linear2_bias, hid.data(), rows, xs, /*accumulate=*/true);
  if (!spec.norm_first) NormRows(w.norm2_w, w.norm2_b, spec.eps, rows, d, xs, xs);
}

}  // namespace modrwkv::encoders

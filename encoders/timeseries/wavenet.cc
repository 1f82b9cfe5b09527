// WaveNetEncoder: loading (shape checks against the format) and the forward on packed GEMMs.
// The causal kernel-2 conv needs no im2col: tap 1 multiplies every row, tap 0 the rows shifted
// by the dilation, both accumulated into the same output.
#include "encoders/timeseries/wavenet.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "encoders/timeseries/encoder_weights.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/kernels.h"

namespace modrwkv::encoders {
namespace {

using TensorMap = std::map<std::string, TensorView>;
using ts_weights::CheckShape;
using ts_weights::Need;
using ts_weights::Packed;
using ts_weights::ToF32;

// A Linear's weight [out, in] (checked) as a packed matrix, and its bias [out].
absl::Status LoadLinear(const TensorMap& t, const std::string& stem, int out, int in,
                        std::set<std::string>* used, cpu::Matrix* w, std::vector<float>* b) {
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* wv, Need(t, stem + ".weight", used));
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* bv, Need(t, stem + ".bias", used));
  MODRWKV_RETURN_IF_ERROR(CheckShape(*wv, {out, in}, ""));
  MODRWKV_RETURN_IF_ERROR(CheckShape(*bv, {out}, ""));
  *w = cpu::MakeMatrix(*wv, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
  *b = ToF32(*bv);
  return absl::OkStatus();
}

// rows r of y[R][n] = bias (the GEMMs then accumulate into it).
void FillBias(const std::vector<float>& bias, int R, float* y) {
  const size_t n = bias.size();
  for (int r = 0; r < R; ++r) std::memcpy(y + r * n, bias.data(), n * sizeof(float));
}

}  // namespace

absl::StatusOr<std::unique_ptr<WaveNetEncoder>> WaveNetEncoder::Load(
    const TensorMap& tensors, const std::string& prefix, absl::Span<const int> dilations) {
  if (dilations.empty()) {
    return absl::InvalidArgumentError("time-series encoder: no dilations (one per layer needed)");
  }
  for (size_t i = 0; i < dilations.size(); ++i) {
    if (dilations[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("time-series encoder: dilations[", i, "] is ",
                                                     dilations[i], ", must be >= 1"));
    }
  }
  const std::string layers_prefix = prefix + "layers.";
  MODRWKV_ASSIGN_OR_RETURN(const int ckpt_layers, ts_weights::LayerCount(tensors, layers_prefix));
  if (ckpt_layers != static_cast<int>(dilations.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time-series encoder: the checkpoint has ", ckpt_layers, " WaveNet layers (", layers_prefix,
        "0..", ckpt_layers - 1, ") but time_series.dilations names ", dilations.size()));
  }

  std::unique_ptr<WaveNetEncoder> e(new WaveNetEncoder());
  std::set<std::string> used;
  MODRWKV_ASSIGN_OR_RETURN(const TensorView* embed, Need(tensors, prefix + "embed.weight", &used));
  if (embed->shape.size() != 2 || embed->shape[0] < 1 || embed->shape[1] < 1 ||
      embed->shape[0] > (1 << 16) || embed->shape[1] > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: tensor ", embed->name,
                                                   " has shape ", embed->ShapeString(),
                                                   ", expected [d, patch * channels]"));
  }
  const int d = static_cast<int>(embed->shape[0]);
  e->dim_ = d;
  e->input_dim_ = static_cast<int>(embed->shape[1]);
  MODRWKV_RETURN_IF_ERROR(
      LoadLinear(tensors, prefix + "embed", d, e->input_dim_, &used, &e->embed_, &e->embed_b_));
  for (size_t i = 0; i < dilations.size(); ++i) {
    const std::string p = absl::StrCat(layers_prefix, i, ".");
    Layer l;
    l.dilation = dilations[i];
    MODRWKV_ASSIGN_OR_RETURN(const TensorView* cw, Need(tensors, p + "conv.weight", &used));
    MODRWKV_ASSIGN_OR_RETURN(const TensorView* cb, Need(tensors, p + "conv.bias", &used));
    MODRWKV_RETURN_IF_ERROR(CheckShape(*cw, {2 * d, d, 2}, " ([2d, d, kernel 2])"));
    MODRWKV_RETURN_IF_ERROR(CheckShape(*cb, {2 * d}, ""));
    // [2d][d][2] -> one [2d][d] matrix per tap.
    const std::vector<float> w = ToF32(*cw);
    std::vector<float> t0(w.size() / 2), t1(w.size() / 2);
    for (size_t k = 0; k < t0.size(); ++k) {
      t0[k] = w[2 * k];
      t1[k] = w[2 * k + 1];
    }
    l.tap0 = Packed(t0, 2 * d, d, cw->name);
    l.tap1 = Packed(t1, 2 * d, d, cw->name);
    l.conv_b = ToF32(*cb);
    // res and skip stacked into one [2d][d] GEMM.
    MODRWKV_ASSIGN_OR_RETURN(
        l.res_skip,
        ts_weights::Stacked(tensors, {p + "res.weight", p + "skip.weight"}, d, d, &used));
    MODRWKV_ASSIGN_OR_RETURN(
        l.res_skip_b,
        ts_weights::Concatenated(tensors, {p + "res.bias", p + "skip.bias"}, d, &used));
    e->layers_.push_back(std::move(l));
  }
  MODRWKV_RETURN_IF_ERROR(LoadLinear(tensors, prefix + "out", d, d, &used, &e->out_, &e->out_b_));
  MODRWKV_RETURN_IF_ERROR(ts_weights::NothingElse(
      tensors, prefix, used,
      "the WaveNet format has embed, layers.{i}.{conv,res,skip} and out only"));
  return e;
}

absl::StatusOr<std::vector<float>> WaveNetEncoder::Encode(absl::Span<const float> rows, int R,
                                                          cpu::ThreadPool* pool) const {
  if (R < 1 || rows.size() != static_cast<size_t>(R) * input_dim_) {
    return absl::InvalidArgumentError(absl::StrCat("time-series encoder: ", rows.size(),
                                                   " input values for ", R, " rows of ", input_dim_,
                                                   " (expected at least one row)"));
  }
  std::optional<cpu::ThreadPool> local;
  if (pool == nullptr) pool = &local.emplace(1);
  cpu::LinearRunner runner(pool);  // per call: its packing scratch is not shared
  const size_t d = dim_, d2 = 2 * d;
  std::vector<float> h(R * d), skip(R * d, 0.0f), z(R * d2), g(R * d), rs(R * d2);
  FillBias(embed_b_, R, h.data());
  runner.Run(embed_, rows.data(), input_dim_, R, h.data(), d, /*accumulate=*/true);
  for (const Layer& l : layers_) {
    FillBias(l.conv_b, R, z.data());
    runner.Run(l.tap1, h.data(), d, R, z.data(), d2, /*accumulate=*/true);
    if (R > l.dilation) {  // rows r >= dil read row r - dil; earlier rows read the zero padding
      runner.Run(l.tap0, h.data(), d, R - l.dilation, z.data() + l.dilation * d2, d2,
                 /*accumulate=*/true);
    }
    for (int r = 0; r < R; ++r) {
      float* zr = z.data() + r * d2;
      cpu::VecTanh(zr, d);
      cpu::VecSigmoid(zr + d, d);
      float* gr = g.data() + r * d;
      for (size_t j = 0; j < d; ++j) gr[j] = zr[j] * zr[d + j];
    }
    FillBias(l.res_skip_b, R, rs.data());
    runner.Run(l.res_skip, g.data(), d, R, rs.data(), d2, /*accumulate=*/true);
    for (int r = 0; r < R; ++r) {
      const float* rsr = rs.data() + r * d2;
      float* hr = h.data() + r * d;
      float* sr = skip.data() + r * d;
      for (size_t j = 0; j < d; ++j) hr[j] += rsr[j];
      for (size_t j = 0; j < d; ++j) sr[j] += rsr[d + j];
    }
  }
  for (float& v : skip) v = v > 0 ? v : 0.0f;
  std::vector<float> out(R * d);
  FillBias(out_b_, R, out.data());
  runner.Run(out_, skip.data(), d, R, out.data(), d, /*accumulate=*/true);
  return out;
}

}  // namespace modrwkv::encoders

// TimeSeriesPipeline: loading the three modality parts and running them (see the header).
#include "encoders/timeseries/timeseries_model.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
namespace {

using TensorMap = std::map<std::string, TensorView>;

absl::Status BadKey(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("time-series model: time_series.", key, " ", what));
}

absl::Status CheckManifest(const TimeSeriesManifest& m, int n_embd) {
  if (m.encoder != "wavenet" && m.encoder != "timer") {
    return BadKey("encoder",
                  absl::StrCat("is \"", m.encoder, "\", expected \"wavenet\" or \"timer\""));
  }
  if (m.channels < 1) return BadKey("channels", absl::StrCat("is ", m.channels, ", must be >= 1"));
  if (m.patch < 1) return BadKey("patch", absl::StrCat("is ", m.patch, ", must be >= 1"));
  if (m.horizon < 1) return BadKey("horizon", absl::StrCat("is ", m.horizon, ", must be >= 1"));
  if (m.max_length < m.patch) {
    return BadKey("max_length",
                  absl::StrCat("is ", m.max_length, ", less than one patch (", m.patch, ")"));
  }
  if (!(m.eps > 0) || !std::isfinite(m.eps)) {
    return BadKey("eps", absl::StrCat("is ", m.eps, ", must be a positive finite number"));
  }
  if (m.encoder == "timer" && m.heads < 1) {
    return BadKey("heads",
                  absl::StrCat("is ", m.heads, ", must be >= 1 (the Timer's attention heads)"));
  }
  if (m.encoder == "wavenet" && m.dilations.empty()) {
    return BadKey("dilations", "is empty (one dilation per layer)");
  }
  for (size_t i = 0; i < m.dilations.size(); ++i) {
    if (m.dilations[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("time-series model: time_series.dilations[", i,
                                                     "] is ", m.dilations[i], ", must be >= 1"));
    }
  }
  for (size_t i = 0; i < m.quantiles.size(); ++i) {
    if (!(m.quantiles[i] > 0 && m.quantiles[i] < 1) ||
        (i > 0 && !(m.quantiles[i] > m.quantiles[i - 1]))) {
      return absl::InvalidArgumentError(absl::StrCat("time-series model: time_series.quantiles[", i,
                                                     "] is ", m.quantiles[i],
                                                     ": levels must increase, each in (0, 1)"));
    }
  }
  if (m.baseline != "none" && m.baseline != "last") {
    return BadKey("baseline",
                  absl::StrCat("is \"", m.baseline, "\", expected \"none\" or \"last\""));
  }
  if (n_embd < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("time-series model: the language model's width is ", n_embd));
  }
  return absl::OkStatus();
}

// Every tensor under `prefix` is one of `names` (relative to it).
absl::Status OnlyThese(const TensorMap& t, const std::string& prefix,
                       const std::set<std::string>& names) {
  for (auto it = t.lower_bound(prefix); it != t.end() && absl::StartsWith(it->first, prefix);
       ++it) {
    if (!names.count(it->first.substr(prefix.size()))) {
      return absl::InvalidArgumentError(absl::StrCat("time-series model: unexpected tensor ",
                                                     it->first, " (expected only ", prefix, "{",
                                                     absl::StrJoin(names, ","), "})"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ReadF32(const TensorMap& t, const std::string& name,
                                           const std::vector<int64_t>& shape,
                                           absl::string_view meaning) {
  auto it = t.find(name);
  if (it == t.end()) {
    return absl::NotFoundError(absl::StrCat("time-series model: tensor ", name, " is missing"));
  }
  if (it->second.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat("time-series model: tensor ", name,
                                                   " has shape ", it->second.ShapeString(),
                                                   ", expected ", ShapeToString(shape), meaning));
  }
  std::vector<float> v(static_cast<size_t>(it->second.numel()));
  ConvertToF32(it->second.dtype, it->second.data, v.size(), v.data());
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TimeSeriesPipeline>> TimeSeriesPipeline::Load(
    const TensorMap& tensors, const TimeSeriesManifest& manifest, int n_embd, std::string id,
    const TimeSeriesPlacement& placed) {
  MODRWKV_RETURN_IF_ERROR(CheckManifest(manifest, n_embd));
  std::unique_ptr<TimeSeriesPipeline> p(new TimeSeriesPipeline());
  p->manifest_ = manifest;
  p->n_embd_ = n_embd;
  const int64_t in = int64_t{manifest.patch} * manifest.channels;
  if (manifest.encoder == "timer") {
    MODRWKV_ASSIGN_OR_RETURN(p->timer_, TimerEncoder::Load(tensors, kTsEncoderPrefix,
                                                           manifest.heads, manifest.rope_theta));
    if (p->timer_->input_dim() != manifest.patch) {
      return absl::InvalidArgumentError(
          absl::StrCat("time-series model: tensor ", kTsEncoderPrefix,
                       "embed_layer.emb.weight takes patches of ", p->timer_->input_dim(),
                       " steps, but time_series.patch is ", manifest.patch));
    }
    if (placed.timer) MODRWKV_RETURN_IF_ERROR(p->timer_->UseRunner(placed.timer));
  } else {
    MODRWKV_ASSIGN_OR_RETURN(p->wavenet_,
                             WaveNetEncoder::Load(tensors, kTsEncoderPrefix, manifest.dilations));
  }
  if (p->wavenet_ && p->wavenet_->input_dim() != in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time-series model: tensor ", kTsEncoderPrefix, "embed.weight takes rows of width ",
        p->wavenet_->input_dim(), ", but time_series.patch x time_series.channels = ",
        manifest.patch, " x ", manifest.channels, " = ", in));
  }

  AdapterSpec spec;
  spec.layers.resize(3);
  spec.layers[0].op = AdapterOp::kLinear;
  spec.layers[0].weights = "proj.0";
  spec.layers[1].op = AdapterOp::kRelu;
  spec.layers[2].op = AdapterOp::kLinear;
  spec.layers[2].weights = "proj.2";
  MODRWKV_RETURN_IF_ERROR(OnlyThese(
      tensors, kTsAdapterPrefix, {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias"}));
  MODRWKV_ASSIGN_OR_RETURN(p->adapter_, AdapterChain::Create(spec, tensors, kTsAdapterPrefix));
  if (p->adapter_->input_dim() != p->encoder_dim()) {
    return absl::InvalidArgumentError(
        absl::StrCat("time-series model: tensor ", kTsAdapterPrefix, "proj.0.weight takes width ",
                     p->adapter_->input_dim(), ", but the ", p->timer_ ? "Timer" : "WaveNet",
                     " gives ", p->encoder_dim()));
  }
  if (p->adapter_->output_dim() != n_embd) {
    return absl::InvalidArgumentError(
        absl::StrCat("time-series model: tensor ", kTsAdapterPrefix, "proj.2.weight gives width ",
                     p->adapter_->output_dim(), ", but the language model's width is ", n_embd));
  }
  if (placed.adapter) MODRWKV_RETURN_IF_ERROR(p->adapter_->UseRunner(placed.adapter));

  const int64_t levels = static_cast<int64_t>(manifest.quantiles.size());
  const int64_t out = (1 + levels) * manifest.horizon * manifest.channels;
  const std::string head = kTsHeadPrefix;
  MODRWKV_RETURN_IF_ERROR(OnlyThese(tensors, head, {"weight", "bias"}));
  const std::string meaning =
      absl::StrCat(" ([(1 + quantile levels) x time_series.horizon x time_series.channels = (1 + ",
                   levels, ") x ", manifest.horizon, " x ", manifest.channels, ", n_embd])");
  MODRWKV_ASSIGN_OR_RETURN(p->head_w_, ReadF32(tensors, head + "weight", {out, n_embd}, meaning));
  MODRWKV_ASSIGN_OR_RETURN(p->head_b_, ReadF32(tensors, head + "bias", {out}, ""));

  p->id_ = absl::StrCat(std::move(id), "|series:", manifest.encoder, "|c=", manifest.channels,
                        "|P=", manifest.patch, "|eps=", absl::StrFormat("%a", manifest.eps));
  if (p->timer_) {
    absl::StrAppend(&p->id_, "|heads=", manifest.heads,
                    "|theta=", absl::StrFormat("%a", manifest.rope_theta));
  } else {
    absl::StrAppend(&p->id_, "|dilations=", absl::StrJoin(manifest.dilations, ","));
  }
  // The head's settings are not part of id(): it names the encoder's rows, which they do not
  // change (the encoder cache may share rows between models that differ only in their heads).
  return p;
}

absl::Status TimeSeriesPipeline::Validate(const Series& s, absl::string_view field) const {
  MODRWKV_RETURN_IF_ERROR(ValidateSeries(s, channels(), patch(), max_length(), field));
  // The population std never exceeds the largest |x - mean|, but x - mean itself can overflow
  // float32 (values near +-3.4e38 on both sides of the mean), which would feed inf to the model.
  const std::vector<float> xn = NormalizeSeries(s, Stats(s));
  for (size_t i = 0; i < xn.size(); ++i) {
    if (!std::isfinite(xn[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".values[", i, "] (step ", i / channels(), ", channel ", i % channels(),
          ") does not normalise to a finite value: the channel's values span more than "
          "float32 holds"));
    }
  }
  return absl::OkStatus();
}

std::vector<float> TimeSeriesPipeline::Rows(const Series& s) const {
  return PatchRows(NormalizeSeries(s, Stats(s)), s.length, s.channels, patch());
}

absl::StatusOr<std::shared_ptr<const PreparedItem>> TimeSeriesPipeline::Prepare(
    const MediaItem& item, cpu::ThreadPool* /*pool*/) const {
  if (!item.kind.empty() && item.kind != kSeriesKind) {
    return absl::InvalidArgumentError(absl::StrCat(item.field, ": the time-series encoder got a \"",
                                                   item.kind, "\" item, expected \"", kSeriesKind,
                                                   "\""));
  }
  if (item.bytes == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(item.field, ": no series bytes"));
  }
  MODRWKV_ASSIGN_OR_RETURN(Series s, UnpackSeries(*item.bytes, item.field));
  MODRWKV_RETURN_IF_ERROR(Validate(s, item.field));
  auto prepared = std::make_shared<PreparedItem>();
  prepared->kind = item.kind;
  prepared->shape = {PatchesFor(s.length), int64_t{patch()} * channels()};
  prepared->data = Rows(s);
  return prepared;
}

absl::Status TimeSeriesPipeline::EncodeRows(absl::Span<const float> rows, int R, EmbeddingRows* out,
                                            cpu::ThreadPool* pool) const {
  std::vector<float> enc;
  if (timer_) {
    MODRWKV_ASSIGN_OR_RETURN(enc, EncodeTimer(rows, R, pool));
  } else {
    MODRWKV_ASSIGN_OR_RETURN(enc, wavenet_->Encode(rows, R, pool));
  }
  const int out_rows = R * rows_per_patch();
  MODRWKV_RETURN_IF_ERROR(adapter_->Run(enc, out_rows, &out->data, pool));
  out->rows = out_rows;
  out->dim = n_embd_;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> TimeSeriesPipeline::EncodeTimer(absl::Span<const float> rows,
                                                                   int R,
                                                                   cpu::ThreadPool* pool) const {
  // [R][P * c] time-major -> one sequence of R patches per channel, [c][R][P].
  const int c = channels(), P = patch(), D = timer_->dim();
  std::vector<float> patches(static_cast<size_t>(R) * P * c);
  for (int ch = 0; ch < c; ++ch) {
    for (int64_t rt = 0; rt < int64_t{R} * P; ++rt) {
      patches[static_cast<size_t>(ch) * R * P + rt] = rows[rt * c + ch];
    }
  }
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> h, timer_->Encode(patches, R, pool, c));
  // [c][R][D] -> rows r * c + ch.
  std::vector<float> out(h.size());
  for (int ch = 0; ch < c; ++ch) {
    for (int r = 0; r < R; ++r) {
      std::copy_n(h.begin() + (static_cast<int64_t>(ch) * R + r) * D, D,
                  out.begin() + (static_cast<int64_t>(r) * c + ch) * D);
    }
  }
  return out;
}

absl::Status TimeSeriesPipeline::EncodeBatch(absl::Span<const PreparedItem* const> items,
                                             std::vector<EmbeddingRows>* out,
                                             cpu::ThreadPool* pool) const {
  out->clear();
  out->resize(items.size());
  const int64_t width = int64_t{patch()} * channels();
  for (size_t i = 0; i < items.size(); ++i) {
    const PreparedItem& it = *items[i];
    if (it.shape.size() != 2 || it.shape[0] < 1 || it.shape[0] > max_length() ||
        it.shape[1] != width || it.data.size() != static_cast<size_t>(it.shape[0] * width)) {
      return absl::InternalError(absl::StrCat("prepared series ", i, " has shape ",
                                              ShapeToString(it.shape), " and ", it.data.size(),
                                              " values, expected [rows, ", width, "]"));
    }
    MODRWKV_RETURN_IF_ERROR(EncodeRows(it.data, static_cast<int>(it.shape[0]), &(*out)[i], pool));
  }
  return absl::OkStatus();
}

absl::StatusOr<EmbeddingRows> TimeSeriesPipeline::EncodeSeries(const Series& s,
                                                               absl::string_view field,
                                                               cpu::ThreadPool* pool) const {
  MODRWKV_RETURN_IF_ERROR(Validate(s, field));
  EmbeddingRows out;
  MODRWKV_RETURN_IF_ERROR(EncodeRows(Rows(s), PatchesFor(s.length), &out, pool));
  return out;
}

absl::StatusOr<HeadForecast> TimeSeriesPipeline::ForecastNormalized(absl::Span<const float> hidden,
                                                                    const SeriesNorm& norm) const {
  if (hidden.size() != static_cast<size_t>(n_embd_)) {
    return absl::InvalidArgumentError(absl::StrCat("time-series head: hidden state of ",
                                                   hidden.size(),
                                                   " values, expected n_embd = ", n_embd_));
  }
  const size_t c = static_cast<size_t>(channels());
  if (norm.mean.size() != c || norm.std.size() != c || norm.last.size() != c) {
    return absl::InvalidArgumentError(absl::StrCat(
        "time-series head: normalisation statistics for ", norm.mean.size(), " / ", norm.std.size(),
        " / ", norm.last.size(), " channels, the model has ", channels()));
  }
  const size_t n = head_b_.size();
  std::vector<float> y(n);
  const bool last = manifest_.baseline == "last";
  for (size_t o = 0; o < n; ++o) {
    const float* w = head_w_.data() + o * n_embd_;
    double acc = 0;  // one rounding at the end: closer to exact than any fp32 order
    for (int k = 0; k < n_embd_; ++k) acc += static_cast<double>(w[k]) * hidden[k];
    y[o] = static_cast<float>(acc + head_b_[o]);
    if (last) y[o] += norm.last[o % c];
  }
  HeadForecast f;
  const size_t per = static_cast<size_t>(horizon()) * c;
  f.point.assign(y.begin(), y.begin() + per);
  f.quantiles.assign(y.begin() + per, y.end());
  // Sort each (step, channel)'s levels: a column of stride `per`.
  const size_t levels = manifest_.quantiles.size();
  std::vector<float> column(levels);
  for (size_t i = 0; i < per && levels > 1; ++i) {
    for (size_t k = 0; k < levels; ++k) column[k] = f.quantiles[k * per + i];
    std::sort(column.begin(), column.end());
    for (size_t k = 0; k < levels; ++k) f.quantiles[k * per + i] = column[k];
  }
  return f;
}

absl::StatusOr<HeadForecast> TimeSeriesPipeline::Forecast(absl::Span<const float> hidden,
                                                          const SeriesNorm& norm) const {
  MODRWKV_ASSIGN_OR_RETURN(HeadForecast f, ForecastNormalized(hidden, norm));
  Denormalize(absl::MakeSpan(f.point), norm);
  Denormalize(absl::MakeSpan(f.quantiles), norm);
  // values [horizon][channels], all finite, else an error naming `what`, the step and the channel.
  auto finite = [&](absl::Span<const float> values, const std::string& what) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return absl::InvalidArgumentError(absl::StrCat("time-series head: the ", what, " at step ",
                                                       i / channels(), ", channel ", i % channels(),
                                                       " is not finite (", values[i], ")"));
      }
    }
    return absl::OkStatus();
  };
  MODRWKV_RETURN_IF_ERROR(finite(f.point, "forecast"));
  const size_t per = f.point.size();
  for (size_t k = 0; k < manifest_.quantiles.size(); ++k) {
    MODRWKV_RETURN_IF_ERROR(finite(absl::MakeConstSpan(f.quantiles).subspan(k * per, per),
                                   absl::StrCat("quantile ", manifest_.quantiles[k], " forecast")));
  }
  return f;
}

}  // namespace modrwkv::encoders

// The time-series path of a ModRWKV model (docs/models.md, "Time series") as an ItemEncoder for
// the encoder pool, plus the forecasting head that runs on the language model's last hidden
// state:
//
//   series [T, c] --Prepare: unpack, validate, normalise, patch--> rows [T/P, P*c]
//     --EncodeBatch: WaveNet, adapter proj.2(relu(proj.0))--> embedding rows [T/P, C]
//     ... the caller splices the rows before the prompt's tokens and runs the RWKV7 model ...
//   hidden [C] (after ln_out, last position) --Forecast: head (+ the last input value with
//     baseline "last"), quantiles sorted, de-normalise--> forecast [H, c] (+ quantiles [Q, H, c])
//
// How a caller uses it (server, CLI):
//   auto p = TimeSeriesPipeline::Load(ckpt.tensors(), *manifest.time_series, n_embd, id);
//   MODRWKV_RETURN_IF_ERROR(p->Validate(series, "input[0].series"));
//   SeriesNorm norm = p->Stats(series);       // kept for the forecast
//   MediaItem item{std::make_shared<const std::string>(PackSeries(series)), field, kSeriesKind};
//   ... the pool (or EncodeSeries) gives the rows; the model gives `hidden` ...
//   HeadForecast y = *p->Forecast(hidden, norm);   // y.point [horizon][channels]
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "encoders/adapter/adapter_chain.h"
#include "encoders/pool/item_encoder.h"
#include "encoders/timeseries/series.h"
#include "encoders/timeseries/series_norm.h"
#include "encoders/timeseries/timer.h"
#include "encoders/timeseries/timeseries_manifest.h"
#include "encoders/timeseries/wavenet.h"
#include "engine/base/tensor.h"

namespace modrwkv::encoders {

// MediaItem::kind of a packed series (PackSeries).
inline constexpr char kSeriesKind[] = "series";

// Checkpoint key prefixes of the three modality parts.
inline constexpr char kTsEncoderPrefix[] = "modality.ts_encoder.";
inline constexpr char kTsAdapterPrefix[] = "modality.ts_adapter.";
inline constexpr char kTsHeadPrefix[] = "modality.ts_head.";

// What the head gives for one run: the point forecast and, when the manifest names quantile levels,
// one forecast per level.
struct HeadForecast {
  std::vector<float> point;      // [horizon][channels]
  std::vector<float> quantiles;  // [levels][horizon][channels]; per step, never decreasing
};

// Immutable after Load; every method is const and thread-safe (the pool calls Prepare and
// EncodeBatch from several workers at once, each with its own cpu::ThreadPool).
// Where a time-series model's Timer and adapter run: on the language model's GPU when it has one
// (null factories: on the CPU).
struct TimeSeriesPlacement {
  TimerFactory timer;
  AdapterFactory adapter;
};

class TimeSeriesPipeline : public ItemEncoder {
 public:
  // Builds the WaveNet (kTsEncoderPrefix, manifest.dilations), the adapter (kTsAdapterPrefix:
  // linear proj.0 -> relu -> linear proj.2, through AdapterChain) and the head (kTsHeadPrefix:
  // weight [(1 + levels) * horizon * channels, n_embd], bias [that]) from `tensors` (any dtype;
  // converted to f32 here, so the map's views need not outlive Load). Checks the manifest's
  // values, that the WaveNet's input width is patch * channels, that the adapter maps its width
  // to n_embd, and that no unexpected tensor sits under the three prefixes. Errors name the
  // manifest key or the tensor. `id` names the weights (e.g. checkpoint path and fingerprint);
  // the manifest values that change the output are appended to it for id().
  // `placed` says where the Timer and the adapter run (null factories, the default: the CPU;
  // the adapter's runner declines what it cannot run). The WaveNet stays on the CPU (a few
  // hundred thousand multiply-adds a patch: less than a GPU's launch and copies).
  static absl::StatusOr<std::unique_ptr<TimeSeriesPipeline>> Load(
      const std::map<std::string, TensorView>& tensors, const TimeSeriesManifest& manifest,
      int n_embd, std::string id, const TimeSeriesPlacement& placed = {});

  const TimeSeriesManifest& manifest() const { return manifest_; }
  int channels() const { return manifest_.channels; }
  int patch() const { return manifest_.patch; }
  int horizon() const { return manifest_.horizon; }
  const std::vector<float>& quantile_levels() const { return manifest_.quantiles; }
  int max_length() const { return manifest_.max_length; }
  float eps() const { return manifest_.eps; }
  int dim() const { return n_embd_; }  // C, the width of the rows and hidden
  // d, the encoder's width (the WaveNet's, or the Timer's hidden size).
  int encoder_dim() const { return timer_ ? timer_->dim() : wavenet_->dim(); }
  // Patches a series of `length` steps gives: length / patch (0 when length < patch).
  int PatchesFor(int length) const { return length >= patch() ? length / patch() : 0; }
  // Embedding rows a series of `length` steps gives: one per patch with the WaveNet (all
  // channels in one row), one per patch and channel with the Timer (each channel encoded alone,
  // rows time-major: patch r of channel ch is row r * channels + ch).
  int RowsFor(int length) const { return PatchesFor(length) * rows_per_patch(); }
  int rows_per_patch() const { return timer_ ? channels() : 1; }

  // ValidateSeries against this model (channels, patch..max_length, finite values), plus
  // finite normalised values (x - mean overflows float32 when a channel spans ~3e38 both ways).
  absl::Status Validate(const Series& s, absl::string_view field) const;
  // The normalisation statistics of `s` (validated) with the manifest's eps: what Forecast needs.
  SeriesNorm Stats(const Series& s) const { return ComputeSeriesNorm(s, manifest_.eps); }
  // The encoder's input [PatchesFor(length)][patch * channels] of a validated series.
  std::vector<float> Rows(const Series& s) const;

  // ItemEncoder. Prepare: UnpackSeries + Validate + Rows; PreparedItem shape {R, patch *
  // channels}. An item whose kind is set and is not kSeriesKind is refused.
  std::string id() const override { return id_; }
  absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(const MediaItem& item,
                                                              cpu::ThreadPool* pool) const override;
  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override;

  // One series, synchronously (CLI, tests): Validate + Rows + WaveNet + adapter -> [R][C].
  absl::StatusOr<EmbeddingRows> EncodeSeries(const Series& s, absl::string_view field,
                                             cpu::ThreadPool* pool) const;

  // The head on the last position's hidden state (after ln_out), `hidden` [C], in normalised
  // units: o = head(hidden), out[k][h][ch] = o[(k * horizon + h) * channels + ch] (+ norm.last[ch]
  // with baseline "last"); point = out[0], quantiles = out[1..levels] sorted per (h, ch) (the
  // monotone rearrangement: quantile forecasts never cross). `norm` = Stats(input).
  absl::StatusOr<HeadForecast> ForecastNormalized(absl::Span<const float> hidden,
                                                  const SeriesNorm& norm) const;
  // As ForecastNormalized, de-normalised: y_n * std_ch + mean_ch.
  // InvalidArgument when hidden or norm has the wrong size, or a value is not finite.
  absl::StatusOr<HeadForecast> Forecast(absl::Span<const float> hidden,
                                        const SeriesNorm& norm) const;

  const WaveNetEncoder* wavenet() const { return wavenet_.get(); }  // null with the Timer
  const TimerEncoder* timer() const { return timer_.get(); }        // null with the WaveNet
  const AdapterChain& adapter() const { return *adapter_; }

 private:
  TimeSeriesPipeline() = default;
  // The encoder's input [R][patch * channels] -> the adapter's rows [RowsFor(R * patch)][C].
  absl::Status EncodeRows(absl::Span<const float> rows, int R, EmbeddingRows* out,
                          cpu::ThreadPool* pool) const;
  // The Timer over each channel of [R][patch * channels] -> [R * channels][D], time-major.
  absl::StatusOr<std::vector<float>> EncodeTimer(absl::Span<const float> rows, int R,
                                                 cpu::ThreadPool* pool) const;

  TimeSeriesManifest manifest_;
  int n_embd_ = 0;
  std::unique_ptr<WaveNetEncoder> wavenet_;  // one of the two
  std::unique_ptr<TimerEncoder> timer_;
  std::unique_ptr<AdapterChain> adapter_;
  std::vector<float> head_w_;  // [(1 + levels) * horizon * channels][C] row-major
  std::vector<float> head_b_;  // [(1 + levels) * horizon * channels]
  std::string id_;
};

}  // namespace modrwkv::encoders

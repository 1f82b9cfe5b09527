#include "encoders/multimodal/audio_pipeline.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "encoders/audio/wavlm_features.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace modrwkv::encoders {
namespace {

// The official WavLM path refuses outputs over 1023 rows (20 ms per row).
constexpr int kWavlmMaxRows = 1023;

absl::StatusOr<std::string> ModelType(const std::string& folder) {
  const std::filesystem::path path = std::filesystem::path(folder) / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model_type") ||
      !j["model_type"].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": no \"model_type\" (expected \"whisper\" or \"wavlm\")"));
  }
  return j["model_type"].get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AudioPipeline>> AudioPipeline::Create(
    std::unique_ptr<WhisperEncoder> whisper, std::unique_ptr<WhisperFrontEnd> front_end,
    std::unique_ptr<WavlmEncoder> wavlm, std::unique_ptr<AdapterChain> adapter,
    const AudioDecodeOptions& decode, std::string id) {
  if ((whisper == nullptr) == (wavlm == nullptr)) {
    return absl::InvalidArgumentError("an audio pipeline needs exactly one encoder");
  }
  if (whisper != nullptr && front_end == nullptr) {
    return absl::InvalidArgumentError("the Whisper encoder needs its front end");
  }
  if (adapter == nullptr) return absl::InvalidArgumentError("an audio pipeline needs an adapter");
  const int encoder_dim = whisper ? whisper->dim() : wavlm->output_dim();
  if (adapter->input_dim() != encoder_dim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the audio adapter takes rows of width %d but the %s encoder gives %d",
                        adapter->input_dim(), whisper ? "Whisper" : "WavLM", encoder_dim));
  }
  if (whisper && whisper->mel_bins() != front_end->config().feature_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the Whisper encoder takes %d mel bins but preprocessor_config.json makes %d",
        whisper->mel_bins(), front_end->config().feature_size));
  }
  auto p = std::unique_ptr<AudioPipeline>(new AudioPipeline());
  p->decode_ = decode;
  p->decode_.sample_rate = 16000;
  // The encoder's window caps the clip length.
  const double window = whisper ? front_end->config().chunk_length
                                : kWavlmMaxRows * 320.0 / 16000.0;  // WavLM: 320 samples per row
  p->decode_.limits.max_seconds = std::min(p->decode_.limits.max_seconds, window);
  MODRWKV_RETURN_IF_ERROR(p->decode_.limits.Validate());
  p->whisper_ = std::move(whisper);
  p->front_end_ = std::move(front_end);
  p->wavlm_ = std::move(wavlm);
  p->adapter_ = std::move(adapter);
  p->id_ = std::move(id);
  return p;
}

absl::StatusOr<std::unique_ptr<AudioPipeline>> AudioPipeline::Load(
    const std::string& folder, std::unique_ptr<AdapterChain> adapter,
    const AudioDecodeOptions& decode, std::string id, const Placement& placement) {
  MODRWKV_ASSIGN_OR_RETURN(std::string type, ModelType(folder));
  if (type == "whisper") {
    MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<WhisperEncoder> w, WhisperEncoder::Load(folder));
    if (placement.whisper_layers) {
      MODRWKV_RETURN_IF_ERROR(w->UseLayerStack(placement.whisper_layers));
    }
    if (placement.whisper_stem) MODRWKV_RETURN_IF_ERROR(w->UseStem(placement.whisper_stem));
    MODRWKV_ASSIGN_OR_RETURN(WhisperFeatureConfig fc, WhisperFeatureConfig::FromFolder(folder));
    MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<WhisperFrontEnd> fe, WhisperFrontEnd::Create(fc));
    return Create(std::move(w), std::move(fe), nullptr, std::move(adapter), decode, std::move(id));
  }
  if (type == "wavlm") {
    MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<WavlmEncoder> w, WavlmEncoder::Load(folder));
    if (placement.wavlm_layers) MODRWKV_RETURN_IF_ERROR(w->UseLayerStack(placement.wavlm_layers));
    if (placement.wavlm_stem) MODRWKV_RETURN_IF_ERROR(w->UseStem(placement.wavlm_stem));
    return Create(nullptr, nullptr, std::move(w), std::move(adapter), decode, std::move(id));
  }
  return absl::InvalidArgumentError(absl::StrCat(folder, "/config.json: model_type is \"", type,
                                                 "\", expected \"whisper\" or \"wavlm\""));
}

double AudioPipeline::rows_per_second() const {
  // Encoder rows per second (Whisper: 50; WavLM: 50), through the adapter's striding.
  const int encoder_rows = 500;  // 10 s
  return adapter_->OutputRows(encoder_rows) / 10.0;
}

absl::StatusOr<std::shared_ptr<const PreparedItem>> AudioPipeline::Prepare(
    const MediaItem& item, cpu::ThreadPool* /*pool*/) const {
  const auto* data = reinterpret_cast<const uint8_t*>(item.bytes->data());
  MODRWKV_ASSIGN_OR_RETURN(
      std::vector<float> samples,
      DecodeAudio(absl::MakeConstSpan(data, item.bytes->size()), decode_, item.field));
  if (samples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(item.field, ": the audio holds no samples"));
  }
  auto p = std::make_shared<PreparedItem>();
  p->kind = item.kind;
  if (whisper_) {
    WhisperFeatures f = front_end_->Compute(samples);
    p->shape = {f.num_mels, f.num_frames};
    p->valid = f.valid_frames;
    p->data = std::move(f.values);
  } else {
    if (wavlm_->OutputFrames(static_cast<int>(samples.size())) <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(item.field, ": the clip is too short for the WavLM encoder"));
    }
    p->data = NormalizeWavLmInput(samples);
    p->shape = {static_cast<int64_t>(p->data.size())};
  }
  return p;
}

absl::Status AudioPipeline::AdapterRows(const std::vector<float>& features, int rows,
                                        EmbeddingRows* out, cpu::ThreadPool* pool) const {
  MODRWKV_RETURN_IF_ERROR(adapter_->Run(features, rows, &out->data, pool));
  out->dim = adapter_->output_dim();
  out->rows = static_cast<int>(out->data.size() / out->dim);
  if (out->rows <= 0) return absl::InvalidArgumentError("the clip is too short for the adapter");
  return absl::OkStatus();
}

absl::Status AudioPipeline::EncodeBatch(absl::Span<const PreparedItem* const> items,
                                        std::vector<EmbeddingRows>* out,
                                        cpu::ThreadPool* pool) const {
  out->clear();
  out->resize(items.size());
  if (whisper_) {
    // Every clip is padded to the same 30 s: one batched forward.
    const size_t per_clip = size_t{1} * whisper_->mel_bins() * whisper_->mel_frames();
    std::vector<float> mel(per_clip * items.size());
    std::vector<int> valid(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i]->data.size() != per_clip) {
        return absl::InternalError(absl::StrFormat("prepared clip %d holds %d values, expected %d",
                                                   i, items[i]->data.size(), per_clip));
      }
      std::copy(items[i]->data.begin(), items[i]->data.end(), mel.begin() + per_clip * i);
      valid[i] = static_cast<int>(items[i]->valid);
    }
    MODRWKV_ASSIGN_OR_RETURN(std::vector<std::vector<float>> rows,
                             whisper_->Encode(mel, valid, pool));
    for (size_t i = 0; i < items.size(); ++i) {
      const int n = static_cast<int>(rows[i].size() / whisper_->dim());
      MODRWKV_RETURN_IF_ERROR(AdapterRows(rows[i], n, &(*out)[i], pool));
    }
    return absl::OkStatus();
  }
  // WavLM: clips of different lengths, one forward each.
  for (size_t i = 0; i < items.size(); ++i) {
    const int n = static_cast<int>(items[i]->data.size());
    const int frames = wavlm_->OutputFrames(n);
    std::vector<float> features(size_t{1} * frames * wavlm_->output_dim());
    MODRWKV_RETURN_IF_ERROR(wavlm_->Forward(items[i]->data, 1, n, absl::MakeSpan(features), pool));
    MODRWKV_RETURN_IF_ERROR(AdapterRows(features, frames, &(*out)[i], pool));
  }
  return absl::OkStatus();
}

absl::StatusOr<EmbeddingRows> AudioPipeline::EncodeClip(absl::Span<const uint8_t> bytes,
                                                        absl::string_view field,
                                                        cpu::ThreadPool* pool) const {
  MediaItem item;
  item.bytes = std::make_shared<const std::string>(reinterpret_cast<const char*>(bytes.data()),
                                                   bytes.size());
  item.field = std::string(field);
  item.kind = "audio";
  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<const PreparedItem> prepared, Prepare(item, pool));
  std::vector<EmbeddingRows> out;
  const PreparedItem* one = prepared.get();
  MODRWKV_RETURN_IF_ERROR(EncodeBatch(absl::MakeConstSpan(&one, 1), &out, pool));
  return std::move(out[0]);
}

}  // namespace modrwkv::encoders

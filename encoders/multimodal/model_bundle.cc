#include "encoders/multimodal/model_bundle.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "encoders/vision/vit_config.h"
#include "engine/base/status_macros.h"
#include "engine/loader/initial_state_loader.h"
#include "engine/loader/model_loader.h"
#if MODRWKV_HAVE_CUDA
#include "encoders/cuda/cuda_adapter.h"
#include "encoders/cuda/cuda_layer_stack.h"
#include "encoders/cuda/cuda_timer.h"
#include "encoders/cuda/cuda_vision_stem.h"
#include "encoders/cuda/cuda_wavlm_layers.h"
#include "encoders/cuda/cuda_wavlm_stem.h"
#include "encoders/cuda/cuda_whisper_stem.h"
#endif

namespace modrwkv::encoders {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<ModelManifest> ManifestFor(const BundleOptions& options) {
  std::error_code ec;
  if (fs::is_directory(options.model, ec)) return LoadManifest(options.model);
  if (absl::EndsWith(options.model, ".json")) return LoadManifest(options.model);
  ModelManifest m;  // a bare checkpoint: everything else from flags and the keys
  m.dir = fs::path(options.model).parent_path().string();
  m.checkpoint = options.model;
  return m;
}

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Generation B/C marker tokens: the manifest's id, else the id the vocabulary gives `text` when it
// is one token (the official wr_vocab names them), else the id the official code uses.
int32_t SpecialToken(const Tokenizer* tokenizer, int32_t id, const std::string& text,
                     int32_t fallback) {
  if (id >= 0) return id;
  if (text.empty()) return -1;
  if (tokenizer != nullptr) {
    std::vector<int32_t> ids;
    tokenizer->EncodeTo(text, &ids);
    if (ids.size() == 1) return ids[0];
  }
  return fallback;
}

// Where the encoders' transformer layers and stems, and the adapters, run: on the language
// model's GPU when it has one (null factories: on the CPU).
struct EncoderPlacement {
  LayerStackFactory towers;  // the layers of SigLIP, CLIP, Whisper
  VisionStemFactory vision_stem;
  WhisperStemFactory whisper_stem;
  WavlmLayerFactory wavlm_layers;
  WavlmStemFactory wavlm_stem;
  TimerFactory timer;      // the time-series Timer, whole
  AdapterFactory adapter;  // declines the chains it cannot run
};
absl::StatusOr<EncoderPlacement> PlaceEncoders(const ModelOptions& model_options,
                                               const BundleOptions& options) {
  MODRWKV_ASSIGN_OR_RETURN(const int device, model_options.CudaDevice());
  EncoderPlacement e;
#if MODRWKV_HAVE_CUDA
  if (device >= 0) {
    const auto math = options.encoder_tf32 ? cuda::EncoderMath::kTf32 : cuda::EncoderMath::kF32;
    e.towers = cuda::CudaLayerStack::Factory(device, math);
    e.wavlm_layers = cuda::CudaWavlmLayers::Factory(device, math);
    e.vision_stem = cuda::CudaVisionStem::Factory(device, math);
    e.whisper_stem = cuda::CudaWhisperStem::Factory(device, math);
    e.wavlm_stem = cuda::CudaWavlmStem::Factory(device, math);
    e.timer = cuda::CudaTimer::Factory(device, math);
    e.adapter = cuda::CudaAdapter::Factory(device, math);
  }
#endif
  (void)device;  // without the CUDA backend the loader has already refused a device
  (void)options;
  return e;
}

absl::StatusOr<std::shared_ptr<const VisionPipeline>> OpenVision(
    const std::string& folder, const VisionManifest& vm, const CheckpointLayout& layout,
    const Checkpoint& ckpt, const DecodeOptions& decode, uint64_t fingerprint,
    const EncoderPlacement& placed) {
  VisionTowerOptions to;
  to.feature_layer = vm.feature_layer;
  to.drop_class_token = vm.drop_class_token;
  std::unique_ptr<VisionTower> tower;
  if (!layout.encoder_prefix.empty()) {
    // Fine-tuned encoder weights travel in the checkpoint; the folder still gives the shape.
    MODRWKV_ASSIGN_OR_RETURN(std::string json, ReadText(fs::path(folder) / "config.json"));
    MODRWKV_ASSIGN_OR_RETURN(VitConfig config, ParseVitConfig(json));
    MODRWKV_ASSIGN_OR_RETURN(
        tower, VisionTower::Create(config, ckpt.tensors(), layout.encoder_prefix, to));
  } else {
    MODRWKV_ASSIGN_OR_RETURN(tower, VisionTower::Load(folder, to));
  }
  if (placed.towers) MODRWKV_RETURN_IF_ERROR(tower->UseLayerStack(placed.towers));
  if (placed.vision_stem) MODRWKV_RETURN_IF_ERROR(tower->UseStem(placed.vision_stem));
  MODRWKV_ASSIGN_OR_RETURN(
      PreprocessConfig pre,
      LoadPreprocessorConfig((fs::path(folder) / "preprocessor_config.json").string()));
  AdapterSpec spec = layout.adapter;
  if (!vm.adapter_json.empty()) {
    MODRWKV_ASSIGN_OR_RETURN(spec, ParseAdapterSpec(vm.adapter_json));
  }
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<AdapterChain> adapter,
                           AdapterChain::Create(spec, ckpt.tensors(), layout.adapter_prefix));
  if (placed.adapter) MODRWKV_RETURN_IF_ERROR(adapter->UseRunner(placed.adapter));
  std::string id = absl::StrFormat("%s|%s|%016x", fs::absolute(folder).string(),
                                   layout.adapter_prefix, fingerprint);
  MODRWKV_ASSIGN_OR_RETURN(
      std::unique_ptr<VisionPipeline> p,
      VisionPipeline::Create(std::move(tower), pre, std::move(adapter), decode, std::move(id)));
  return std::shared_ptr<const VisionPipeline>(std::move(p));
}

absl::StatusOr<std::shared_ptr<const AudioPipeline>> OpenAudio(
    const std::string& folder, const AudioManifest& am, const CheckpointLayout& layout,
    const Checkpoint& ckpt, const AudioDecodeOptions& decode, uint64_t fingerprint,
    const EncoderPlacement& placed) {
  AdapterSpec spec = layout.adapter;
  if (!am.adapter_json.empty()) {
    MODRWKV_ASSIGN_OR_RETURN(spec, ParseAdapterSpec(am.adapter_json));
  }
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<AdapterChain> adapter,
                           AdapterChain::Create(spec, ckpt.tensors(), layout.adapter_prefix));
  if (placed.adapter) MODRWKV_RETURN_IF_ERROR(adapter->UseRunner(placed.adapter));
  std::string id = absl::StrFormat("%s|%s|%016x|%s", fs::absolute(folder).string(),
                                   layout.adapter_prefix, fingerprint, AdapterSpecToJson(spec));
  // Encoder weights inside the checkpoint are not read for audio yet: the folder's are used.
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<AudioPipeline> p,
                           AudioPipeline::Load(folder, std::move(adapter), decode, std::move(id),
                                               {placed.towers, placed.whisper_stem,
                                                placed.wavlm_layers, placed.wavlm_stem}));
  return std::shared_ptr<const AudioPipeline>(std::move(p));
}

}  // namespace

std::string BundleVocabPath(const BundleOptions& options) {
  absl::StatusOr<ModelManifest> m = ManifestFor(options);
  return m.ok() ? m->vocab : "";
}

absl::StatusOr<ModelBundle> OpenModelBundle(const BundleOptions& options,
                                            const ModelOptions& model_options,
                                            const CheckpointOptions& checkpoint_options,
                                            const Tokenizer* tokenizer) {
  ModelBundle b;
  MODRWKV_ASSIGN_OR_RETURN(b.manifest, ManifestFor(options));
  const std::string& path = b.manifest.checkpoint;
  MODRWKV_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt,
                           Checkpoint::Open(path, checkpoint_options));
  auto in_file = [&](const absl::Status& st) {
    return absl::Status(st.code(), absl::StrCat(path, ": ", st.message()));
  };
  absl::StatusOr<CheckpointLayout> layout = DetectCheckpointLayout(ckpt->tensors());
  if (!layout.ok()) return in_file(layout.status());
  b.layout = *std::move(layout);

  // The language model sees its own keys only, under their bare names.
  const std::map<std::string, TensorView> llm = LlmTensors(b.layout, ckpt->tensors());
  absl::StatusOr<std::unique_ptr<Model>> model = CreateModel(llm, model_options);
  if (!model.ok()) return in_file(model.status());
  b.model = *std::move(model);
  absl::StatusOr<std::optional<InitialState>> carried =
      InitialStateFromTensors("model", llm, b.model->config());
  if (!carried.ok()) return in_file(carried.status());
  if (*carried) b.initial_state = std::make_shared<const InitialState>(**std::move(carried));

  if (b.manifest.time_series) {
    const TimeSeriesManifest& tm = *b.manifest.time_series;
    const std::string id =
        absl::StrFormat("%s|%016x", fs::absolute(path).string(), b.model->info().fingerprint);
    MODRWKV_ASSIGN_OR_RETURN(const EncoderPlacement placed, PlaceEncoders(model_options, options));
    absl::StatusOr<std::unique_ptr<TimeSeriesPipeline>> ts = TimeSeriesPipeline::Load(
        ckpt->tensors(), tm, b.model->config().n_embd, id, {placed.timer, placed.adapter});
    if (!ts.ok()) return in_file(ts.status());
    b.series = *std::move(ts);
    if (!tm.prompt.empty()) {
      if (tokenizer == nullptr) {
        return absl::InvalidArgumentError("time_series.prompt needs the model's vocabulary");
      }
      tokenizer->EncodeTo(tm.prompt, &b.series_prompt);
      for (int32_t t : b.series_prompt) {
        if (t >= b.model->config().vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrFormat("time_series.prompt has token %d, past the model's %d rows", t,
                              b.model->config().vocab_size));
        }
      }
    }
    return b;
  }
  if (ckpt->tensors().count(std::string(kTsHeadPrefix) + "weight")) {
    b.encoder_missing =
        absl::StrCat("the checkpoint has a time-series encoder and head (", kTsEncoderPrefix,
                     "*) but no \"", "time_series\" section in ", kManifestName,
                     " says its patch, dilations and horizon: serving text only");
    return b;
  }
  if (b.layout.generation == 'T') return b;  // text only
  MODRWKV_ASSIGN_OR_RETURN(const EncoderPlacement placed, PlaceEncoders(model_options, options));
  // The checkpoint holds one adapter; which encoder feeds it is what the user names. Generation
  // A's speech adapter starts with a convolution over the encoder's rows.
  const bool speech_adapter = b.layout.generation == 'A' && !b.layout.adapter.layers.empty() &&
                              b.layout.adapter.layers[0].op == AdapterOp::kConv1d;
  const AudioManifest am = b.manifest.audio.value_or(AudioManifest{});
  const std::string audio_folder =
      !options.audio_encoder.empty() ? options.audio_encoder : am.encoder;
  if (!audio_folder.empty()) {
    MODRWKV_ASSIGN_OR_RETURN(b.audio,
                             OpenAudio(audio_folder, am, b.layout, *ckpt, options.audio_decode,
                                       b.model->info().fingerprint, placed));
    if (b.audio->dim() != b.model->config().n_embd) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the audio adapter gives rows of width %d but the language model's width is %d",
          b.audio->dim(), b.model->config().n_embd));
    }
    return b;
  }
  std::string folder = options.vision_encoder;
  VisionManifest vm = b.manifest.vision.value_or(VisionManifest{});
  if (folder.empty()) folder = vm.encoder;
  if (folder.empty()) {
    b.encoder_missing = absl::StrCat(
        "the checkpoint has ", speech_adapter ? "a speech" : "a vision", " adapter (generation ",
        std::string(1, b.layout.generation), ") but no ", speech_adapter ? "audio" : "vision",
        " encoder folder was given (", speech_adapter ? "--audio-encoder" : "--vision-encoder",
        ", or \"", speech_adapter ? "audio" : "vision", "\": {\"encoder\": ...} in ", kManifestName,
        "): serving text only");
    return b;
  }
  MODRWKV_ASSIGN_OR_RETURN(b.vision, OpenVision(folder, vm, b.layout, *ckpt, options.decode,
                                                b.model->info().fingerprint, placed));
  if (b.vision->dim() != b.model->config().n_embd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the vision adapter gives rows of width %d but the language model's width is %d",
        b.vision->dim(), b.model->config().n_embd));
  }
  b.image_splice.rows = b.vision->rows_per_image();
  b.image_splice.mode = vm.splice.value_or(b.layout.generation == 'A' ? SpliceMode::kPrepend
                                                                      : SpliceMode::kReplacePad);
  if (b.image_splice.mode == SpliceMode::kReplacePad) {
    b.image_splice.start_token = SpecialToken(tokenizer, vm.image_start_id, vm.image_start, 65530);
    b.image_splice.end_token = SpecialToken(tokenizer, vm.image_end_id, vm.image_end, 65531);
    for (int32_t t : {b.image_splice.start_token, b.image_splice.end_token}) {
      if (t >= b.model->config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "the image marker token %d is outside the model's vocabulary of %d rows", t,
            b.model->config().vocab_size));
      }
    }
  }
  return b;
}

}  // namespace modrwkv::encoders

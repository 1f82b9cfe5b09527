#include "tools/cli/random_multimodal_model.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "encoders/speech/whisper_config.h"
#include "encoders/speech/whisper_random.h"
#include "encoders/vision/random_vit.h"
#include "encoders/vision/vit_config.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"

namespace modrwkv::cli {
namespace {

encoders::VitConfig ShapeConfig(const std::string& shape) {
  encoders::VitConfig c = encoders::DefaultVitConfig(encoders::VitKind::kSiglip);
  if (shape == "siglip2-base") {
    c.image_size = 384;
    c.patch_size = 16;
    c.hidden_size = 768;
    c.intermediate_size = 3072;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
  } else {  // tiny
    c.image_size = 64;
    c.patch_size = 16;
    c.hidden_size = 96;
    c.intermediate_size = 384;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
  }
  return c;
}

OwnedTensor F32(std::string name, std::vector<int64_t> shape, const std::vector<float>& v) {
  OwnedTensor t;
  t.name = std::move(name);
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * sizeof(float));
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// A tensor of `shape` uniform in (-bound, bound): torch's Linear / Conv1d init range with
// bound = FanInBound(fan-in).
void AddUniform(const std::string& name, std::vector<int64_t> shape, double bound, uint64_t seed,
                std::vector<OwnedTensor>* tensors) {
  RandomTensors t(seed);
  t.Add(name, std::move(shape), -bound, bound);
  tensors->push_back(std::move(t.Take().front()));
}

void AddLinear(const std::string& stem, int in, int out, uint64_t seed,
               std::vector<OwnedTensor>* tensors) {
  AddUniform(stem + ".weight", {out, in}, FanInBound(in), seed, tensors);
  AddUniform(stem + ".bias", {out}, FanInBound(in), seed, tensors);
}

encoders::WhisperConfig AudioShapeConfig(const std::string& shape) {
  if (shape == "whisper-small") return encoders::WhisperSmallConfig();
  encoders::WhisperConfig c;  // tiny
  c.d_model = 64;
  c.encoder_layers = 2;
  c.encoder_attention_heads = 2;
  c.encoder_ffn_dim = 256;
  return c;
}

absl::Status WriteText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckVisionShape(const std::string& shape) {
  if (shape == "siglip2-base" || shape == "tiny") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--vision is '", shape, "', expected siglip2-base or tiny"));
}

void AddRandomVisionAdapter(const std::string& shape, int n_embd, uint64_t seed,
                            std::vector<OwnedTensor>* tensors) {
  const int d = ShapeConfig(shape).hidden_size;
  const std::string p = "modality.world_encoder.adapter.";
  AddLinear(p + "proj.0", d, 2 * n_embd, seed, tensors);
  AddLinear(p + "proj.2", 2 * n_embd, n_embd, seed, tensors);
  tensors->push_back(F32(p + "pre_norm.weight", {n_embd}, std::vector<float>(n_embd, 1.0f)));
  tensors->push_back(F32(p + "pre_norm.bias", {n_embd}, std::vector<float>(n_embd, 0.0f)));
}

absl::Status WriteRandomVisionEncoder(const std::string& shape, uint64_t seed,
                                      const std::string& dir) {
  MODRWKV_RETURN_IF_ERROR(CheckVisionShape(shape));
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const encoders::VitConfig c = ShapeConfig(shape);
  std::vector<OwnedTensor> weights = encoders::MakeRandomVitWeights(c, seed);
  for (OwnedTensor& t : weights)
    t.name = "vision_model." + t.name;  // as save_pretrained names them
  MODRWKV_RETURN_IF_ERROR(
      WriteSafetensors((fs::path(dir) / "model.safetensors").string(), weights));
  MODRWKV_RETURN_IF_ERROR(
      WriteText(fs::path(dir) / "config.json",
                absl::StrFormat(
                    R"({"model_type": "siglip_vision_model", "architectures": ["SiglipVisionModel"],
 "image_size": %d, "patch_size": %d, "num_channels": 3, "hidden_size": %d,
 "intermediate_size": %d, "num_hidden_layers": %d, "num_attention_heads": %d,
 "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06}
)",
                    c.image_size, c.patch_size, c.hidden_size, c.intermediate_size,
                    c.num_hidden_layers, c.num_attention_heads)));
  return WriteText(
      fs::path(dir) / "preprocessor_config.json",
      absl::StrFormat(R"({"image_processor_type": "SiglipImageProcessor", "do_resize": true,
 "size": {"height": %d, "width": %d}, "resample": 2, "do_rescale": true,
 "rescale_factor": 0.00392156862745098, "do_normalize": true,
 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
)",
                      c.image_size, c.image_size));
}

absl::Status CheckAudioShape(const std::string& shape) {
  if (shape == "whisper-small" || shape == "tiny") return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--audio is '", shape, "', expected whisper-small or tiny"));
}

void AddRandomSpeechAdapter(const std::string& shape, int n_embd, uint64_t seed,
                            std::vector<OwnedTensor>* tensors) {
  const int d = AudioShapeConfig(shape).d_model;
  const std::string p = "modality.world_encoder.adapter.";
  const double bound = FanInBound(3 * d);  // Conv1d(d, 2 n_embd, 3): fan-in d * 3
  AddUniform(p + "conv.weight", {2 * n_embd, d, 3}, bound, seed, tensors);
  AddUniform(p + "conv.bias", {2 * n_embd}, bound, seed, tensors);
  AddLinear(p + "proj.0", 2 * n_embd, 2 * n_embd, seed, tensors);
  AddLinear(p + "proj.2", 2 * n_embd, n_embd, seed, tensors);
}

absl::Status WriteRandomAudioEncoder(const std::string& shape, uint64_t seed,
                                     const std::string& dir) {
  MODRWKV_RETURN_IF_ERROR(CheckAudioShape(shape));
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const encoders::WhisperConfig c = AudioShapeConfig(shape);
  std::vector<OwnedTensor> weights = encoders::MakeRandomWhisperWeights(c, seed);
  for (OwnedTensor& t : weights)
    t.name = "model.encoder." + t.name;  // as save_pretrained names them
  MODRWKV_RETURN_IF_ERROR(
      WriteSafetensors((fs::path(dir) / "model.safetensors").string(), weights));
  return WriteText(
      fs::path(dir) / "config.json",
      absl::StrFormat(
          R"({"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
 "num_mel_bins": %d, "d_model": %d, "encoder_layers": %d, "encoder_attention_heads": %d,
 "encoder_ffn_dim": %d, "max_source_positions": %d, "activation_function": "gelu"}
)",
          c.num_mel_bins, c.d_model, c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim,
          c.max_source_positions));
}

namespace {
constexpr int kTsChannels = 1, kTsPatch = 4, kTsWidth = 32, kTsHorizon = 12;
constexpr int kTsDilations[] = {1, 2, 4, 8, 1, 2, 4, 8};
}  // namespace

namespace {
// The random Timers: timer-base-84m's shape, and a tiny two-channel one for tests.
struct TimerShape {
  int patch, width, layers, heads, ffn, channels;
};
constexpr TimerShape kTimerBase{96, 1024, 8, 8, 2048, 1};
constexpr TimerShape kTimerTiny{8, 32, 2, 4, 64, 2};

const TimerShape* TimerShapeFor(const std::string& encoder) {
  if (encoder == "timer") return &kTimerBase;
  if (encoder == "timer-tiny") return &kTimerTiny;
  return nullptr;
}

// TimerModel's tensors under `e` (torch's Linear init range, LayerNorm weights 1, biases 0).
void AddRandomTimer(const std::string& e, const TimerShape& t, uint64_t seed,
                    std::vector<OwnedTensor>* tensors) {
  const int d = t.width, f = t.ffn;
  auto weight = [&](const std::string& name, int out, int in) {
    AddUniform(name, {out, in}, FanInBound(in), seed, tensors);
  };
  auto norm = [&](const std::string& stem) {
    tensors->push_back(F32(stem + ".weight", {d}, std::vector<float>(d, 1.0f)));
    tensors->push_back(F32(stem + ".bias", {d}, std::vector<float>(d, 0.0f)));
  };
  weight(e + "embed_layer.emb.weight", d, t.patch);
  for (int i = 0; i < t.layers; ++i) {
    const std::string l = absl::StrCat(e, "layers.", i, ".");
    for (const char* w : {"q", "k", "v"})
      AddLinear(absl::StrCat(l, "self_attn.", w, "_proj"), d, d, seed, tensors);
    weight(l + "self_attn.o_proj.weight", d, d);
    weight(l + "ffn_layer.gate_proj.weight", f, d);
    weight(l + "ffn_layer.up_proj.weight", f, d);
    weight(l + "ffn_layer.down_proj.weight", d, f);
    norm(l + "norm1");
    norm(l + "norm2");
  }
  norm(e + "norm");
}
}  // namespace

bool IsRandomSeriesEncoder(const std::string& encoder) {
  return encoder == "wavenet" || TimerShapeFor(encoder) != nullptr;
}

void AddRandomTimeSeriesModel(int n_embd, uint64_t seed, std::vector<OwnedTensor>* tensors,
                              const std::string& encoder) {
  const std::string e = "modality.ts_encoder.";
  if (const TimerShape* t = TimerShapeFor(encoder)) {
    AddRandomTimer(e, *t, seed, tensors);
    AddLinear("modality.ts_adapter.proj.0", t->width, 4 * t->width, seed, tensors);
    AddLinear("modality.ts_adapter.proj.2", 4 * t->width, n_embd, seed, tensors);
    AddLinear("modality.ts_head", n_embd, kTsHorizon * t->channels, seed, tensors);
    return;
  }
  const int d = kTsWidth;
  AddLinear(e + "embed", kTsPatch * kTsChannels, d, seed, tensors);
  for (size_t i = 0; i < std::size(kTsDilations); ++i) {
    const std::string l = absl::StrCat(e, "layers.", i, ".");
    const double bound = FanInBound(2 * d);  // Conv1d(d, 2d, 2): fan-in d * 2
    AddUniform(l + "conv.weight", {2 * d, d, 2}, bound, seed, tensors);
    AddUniform(l + "conv.bias", {2 * d}, bound, seed, tensors);
    AddLinear(l + "res", d, d, seed, tensors);
    AddLinear(l + "skip", d, d, seed, tensors);
  }
  AddLinear(e + "out", d, d, seed, tensors);
  AddLinear("modality.ts_adapter.proj.0", d, 4 * d, seed, tensors);
  AddLinear("modality.ts_adapter.proj.2", 4 * d, n_embd, seed, tensors);
  AddLinear("modality.ts_head", n_embd, kTsHorizon * kTsChannels, seed, tensors);
}

std::string RandomTimeSeriesManifest(int max_length, const std::string& encoder) {
  if (const TimerShape* t = TimerShapeFor(encoder)) {
    return absl::StrFormat(
        R"("time_series": {"encoder": "timer", "channels": %d, "patch": %d, "heads": %d, )"
        R"("horizon": %d, "max_length": %d})",
        t->channels, t->patch, t->heads, kTsHorizon, max_length);
  }
  std::string dilations;
  for (int v : kTsDilations) absl::StrAppend(&dilations, dilations.empty() ? "" : ", ", v);
  return absl::StrFormat(
      R"("time_series": {"encoder": "wavenet", "channels": %d, "patch": %d, "dilations": [%s], )"
      R"("horizon": %d, "max_length": %d})",
      kTsChannels, kTsPatch, dilations, kTsHorizon, max_length);
}

}  // namespace modrwkv::cli

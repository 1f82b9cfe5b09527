// info / logits / make-demo-model: inspecting models and making the demo one.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_format.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_weights.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/multimodal_prompt.h"
#include "tools/cli/random_multimodal_model.h"

namespace modrwkv::cli {

int RunInfo(int argc, char** argv) {
  Flags flags("info", "--model M",
              "Prints the model's shapes, parameter count, weight dtype and "
              "the state size per sequence.");
  AddModelFlags(flags);
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto model = LoadModelFromFlags(flags, 1);
  if (!model.ok()) return Fail(model.status());
  const ModelDescription& info = (*model)->info();
  const ModelConfig& c = info.config;
  std::printf("model            %s\n", flags.Str("model").c_str());
  std::printf("layers           %d\n", c.n_layer);
  std::printf("width (C)        %d\n", c.n_embd);
  std::printf("heads x size     %d x %d\n", c.n_head, c.head_size);
  std::printf("ffn width        %d\n", c.ffn_size);
  std::printf("vocab            %d\n", c.vocab_size);
  std::printf("lora ranks       w=%d a=%d v=%d g=%d\n", c.d_decay, c.d_aaa, c.d_mv, c.d_gate);
  std::printf("parameters       %lld (%.3f B)\n", static_cast<long long>(info.parameter_count),
              info.parameter_count / 1e9);
  std::printf("weight dtype     %s (%s backend)\n", info.weight_dtype.c_str(),
              info.backend.c_str());
  std::printf("weight bytes     %.1f MB (%.1f MB read per decode token)\n", info.weight_bytes / 1e6,
              info.decode_bytes_per_token / 1e6);
  std::printf("state per seq    %lld bytes (%.2f MB, f32)\n",
              static_cast<long long>(c.StateBytes()), c.StateBytes() / 1e6);
  return 0;
}

int RunLogits(int argc, char** argv) {
  Flags flags("logits", "--model M [--image F [--before \"1 2\"]] --tokens \"1 2 3\" --out F",
              "Runs the tokens from a zero state (after the image's rows, spliced as the "
              "checkpoint's generation says: bare, or between generation B's marker tokens) and "
              "writes the final position's logits as raw little-endian float32 (vocab-size "
              "values).");
  AddModelFlags(flags);
  flags.Add("tokens", "", "token ids, space- or comma-separated", true)
      .Add("image", "", "an image file, for a model with a vision encoder")
      .Add("audio", "", "an audio file, for a model with an audio encoder")
      .Add("before", "", "token ids before the image (e.g. the official prompt's \"\\x16User:\")")
      .Add("out", "", "output file", true);
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto ids = ParseIds(flags.Str("tokens"), "tokens");
  if (!ids.ok()) return UsageError(flags, ids.status());
  if (ids->empty()) return UsageError(flags, absl::InvalidArgumentError("--tokens is empty"));
  auto before = ParseIds(flags.Str("before"), "before");
  if (!before.ok()) return UsageError(flags, before.status());
  auto tok = LoadTokenizer("", flags.Str("model"));
  auto bundle = LoadBundleFromFlags(flags, 1, tok.ok() ? tok->get() : nullptr);
  if (!bundle.ok()) return Fail(bundle.status());
  Model& m = *bundle->model;
  for (const auto& [name, list] : {std::pair{"tokens", &*ids}, std::pair{"before", &*before}}) {
    for (int32_t t : *list) {
      if (t >= m.config().vocab_size) {
        return UsageError(flags, absl::InvalidArgumentError(absl::StrFormat(
                                     "--%s: %d is outside the model's vocabulary of %d", name, t,
                                     m.config().vocab_size)));
      }
    }
  }
  auto mo = ModelOptionsFromFlags(flags, 1);
  if (!mo.ok()) return UsageError(flags, mo.status());
  auto parts = BuildPrompt(*bundle, *before, *ids,
                           !flags.Str("audio").empty() ? MediaFile{"audio", flags.Str("audio")}
                                                       : MediaFile{"image", flags.Str("image")},
                           mo->threads > 0 ? mo->threads : 1);
  if (!parts.ok()) return Fail(parts.status());
  StepEntry e;
  e.slot = 0;
  std::vector<StepResult> res;
  if (auto st = Prefill(m, *parts, StepOutput::kLogits, &e, &res); !st.ok()) return Fail(st);
  std::ofstream out(flags.Str("out"), std::ios::binary);
  out.write(reinterpret_cast<const char*>(res[0].logits.data()),
            static_cast<std::streamsize>(res[0].logits.size() * sizeof(float)));
  if (!out) return Fail(absl::InternalError("cannot write " + flags.Str("out")));
  return 0;
}

int RunMakeDemoModel(int argc, char** argv) {
  Flags flags(
      "make-demo-model",
      "--out DIR [--shape tiny] [--format pth] [--vision siglip2-base | --audio whisper-small | "
      "--time-series]",
      "Writes a random-weight RWKV7 checkpoint (seeded; docs/random-weights.md) and the "
      "vocabulary into DIR; with --vision, a generation-A vision model: the adapter in "
      "the checkpoint, a SigLIP encoder folder (DIR/encoder) and the manifest, so DIR "
      "serves images; with --audio, the same for speech (a Whisper encoder folder); with "
      "--time-series, a forecaster (the encoder and head in the checkpoint, the manifest). Its "
      "text is "
      "random: it exercises the whole serving path without a "
      "download.");
  flags.Add("out", "", "output directory", true)
      .Add("shape", "tiny", "tiny (L2 C128), 0.1b (L12 C768), 0.4b (L24 C1024), 1.5b (L24 C2048)")
      .Add("format", "pth", "pth (torch.save zip, BlinkDL names) or safetensors")
      .Add("dtype", "bf16", "bf16 (as released models) or f32")
      .Add("seed", "1", "weight seed")
      .Add("vision", "", "add a random vision encoder + adapter: siglip2-base or tiny")
      .Add("audio", "", "instead: a random Whisper encoder + speech adapter: whisper-small or tiny")
      .AddBool("time-series",
               "instead: a random time-series model (WaveNet encoder, adapter, 12-step head; "
               "the assets/ts-demo shape) in a model directory")
      .Add("max-series-length", "32768", "with --time-series: the manifest's max_length")
      .Add("series-encoder", "wavenet",
           "with --time-series: wavenet (the demo's shape), timer (timer-base-84m's shape: "
           "patch 96, width 1024, 8 layers, 8 heads) or timer-tiny (patch 8, width 32, 2 "
           "channels)");
  auto parsed = flags.Parse(argc, argv, 2);
  if (!parsed.ok()) return UsageError(flags, parsed.status());
  if (!*parsed) return 0;
  auto spec = RandomSpecForShape(flags.Str("shape"));
  if (!spec.ok()) return UsageError(flags, spec.status());
  auto seed = flags.Int("seed", 0, INT64_MAX);
  if (!seed.ok()) return UsageError(flags, seed.status());
  spec->seed = static_cast<uint64_t>(*seed);
  const std::string dtype = flags.Str("dtype"), format = flags.Str("format");
  if (dtype != "bf16" && dtype != "f32") {
    return UsageError(flags, absl::InvalidArgumentError("--dtype must be bf16 or f32"));
  }
  if (format != "pth" && format != "safetensors") {
    return UsageError(flags, absl::InvalidArgumentError("--format must be pth or safetensors"));
  }
  spec->dtype = dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const std::string vision = flags.Str("vision");
  const std::string audio = flags.Str("audio");
  if (!vision.empty()) {
    if (auto st = CheckVisionShape(vision); !st.ok()) return UsageError(flags, st);
  }
  if (!audio.empty()) {
    if (auto st = CheckAudioShape(audio); !st.ok()) return UsageError(flags, st);
  }
  const bool time_series = flags.Bool("time-series");
  if (int(!vision.empty()) + int(!audio.empty()) + int(time_series) > 1) {
    return UsageError(
        flags, absl::InvalidArgumentError("give one of --vision, --audio and --time-series"));
  }
  auto tensors = MakeRandomRwkv7(*spec);
  if (!tensors.ok()) return Fail(tensors.status());
  if (!vision.empty()) AddRandomVisionAdapter(vision, spec->n_embd, spec->seed, &*tensors);
  if (!audio.empty()) AddRandomSpeechAdapter(audio, spec->n_embd, spec->seed, &*tensors);
  const std::string series_encoder = flags.Str("series-encoder");
  if (!IsRandomSeriesEncoder(series_encoder)) {
    return UsageError(flags,
                      absl::InvalidArgumentError("--series-encoder: wavenet, timer or timer-tiny"));
  }
  if (time_series) AddRandomTimeSeriesModel(spec->n_embd, spec->seed, &*tensors, series_encoder);
  namespace fs = std::filesystem;
  const fs::path dir = flags.Str("out");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Fail(absl::InternalError("cannot create " + dir.string() + ": " + ec.message()));
  const fs::path model = dir / (format == "pth" ? "model.pth" : "model.safetensors");
  const absl::Status st = format == "pth" ? WriteTorchCheckpoint(model.string(), *tensors)
                                          : WriteSafetensors(model.string(), *tensors);
  if (!st.ok()) return Fail(st);
  const fs::path vocab = dir / "rwkv_vocab_v20230424.txt";
  fs::copy_file(DefaultVocabPath(), vocab, fs::copy_options::overwrite_existing, ec);
  if (ec) return Fail(absl::InternalError("cannot copy the vocabulary: " + ec.message()));
  if (time_series) {
    auto max_length = flags.Int("max-series-length", 4, 1 << 22);
    if (!max_length.ok()) return UsageError(flags, max_length.status());
    std::ofstream manifest(dir / "modrwkv-model.json");
    manifest << "{\"format\": 1, \"checkpoint\": \"" << model.filename().string() << "\", "
             << RandomTimeSeriesManifest(static_cast<int>(*max_length), series_encoder) << "}\n";
    if (!manifest) return Fail(absl::InternalError("cannot write the manifest in " + dir.string()));
    std::printf("%s\n", dir.string().c_str());
    return 0;
  }
  if (!vision.empty() || !audio.empty()) {
    const absl::Status written =
        vision.empty() ? WriteRandomAudioEncoder(audio, spec->seed, (dir / "encoder").string())
                       : WriteRandomVisionEncoder(vision, spec->seed, (dir / "encoder").string());
    if (!written.ok()) return Fail(written);
    std::ofstream manifest(dir / "modrwkv-model.json");
    manifest << "{\"format\": 1, \"checkpoint\": \"" << model.filename().string() << "\", \""
             << (vision.empty() ? "audio" : "vision") << "\": {\"encoder\": \"encoder\"}}\n";
    if (!manifest) return Fail(absl::InternalError("cannot write the manifest in " + dir.string()));
    std::printf("%s\n", dir.string().c_str());
    return 0;
  }
  std::printf("%s\n", model.string().c_str());
  return 0;
}

}  // namespace modrwkv::cli

#include "tools/cli/common.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/loader/model_loader.h"

namespace modrwkv::cli {

namespace fs = std::filesystem;
constexpr const char* kVocabName = "rwkv_vocab_v20230424.txt";

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
  return 1;
}

int UsageError(const Flags& flags, const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n\n%s", std::string(status.message()).c_str(),
               flags.Usage().c_str());
  return 2;
}

void AddModelFlags(Flags& flags) {
  flags
      .Add("model", "",
           "checkpoint (BlinkDL .pth or .safetensors; text or ModRWKV), or a model directory with "
           "modrwkv-model.json",
           true)
      .Add("vision-encoder", "",
           "vision encoder folder (Hugging Face layout: config.json, model.safetensors, "
           "preprocessor_config.json) for a ModRWKV checkpoint")
      .Add("audio-encoder", "",
           "audio encoder folder (Whisper or WavLM, Hugging Face layout) for a ModRWKV checkpoint "
           "with a speech adapter")
      .Add("dtype", "auto",
           "weight type in memory: auto (as the file, bf16 for bf16/f16), f32, bf16, int8, int4 "
           "(the CPU only: 4.5 bits per weight of the large projections, the rest int8), or f16 "
           "(--device cuda only)")
      .Add("device", "cpu",
           "the backend: cpu, or cuda / cuda:N (GPU N; builds with the CUDA backend; f32 weights, "
           "or bf16 / f16 with --dtype bf16 / f16)")
      .Add("state-dtype", "f32",
           "the state pool's element type: f32, or f16 (--device cuda only; half the memory per "
           "session, states rounded to f16 once per step)")
      .AddNegatableBool("cuda-graphs", true,
                        "with --device cuda: replay decode steps as CUDA graphs (--no-cuda-graphs: "
                        "launch every kernel one by one)")
      .AddNegatableBool("encoder-tf32", false,
                        "with --device cuda: the encoders' and adapters' f32 products on TF32 "
                        "tensor cores (inputs rounded to 10 mantissa bits, several times the "
                        "rate); off: plain f32")
      .AddNegatableBool("sparse-ffn", true,
                        "decode steps of a few sequences read only the channel mix's value "
                        "weights of nonzero activations (same results; --no-sparse-ffn: read "
                        "every weight)")
      .Add("threads", "0",
           "CPU threads (0 = the CPUs this process may use: affinity mask capped by the cgroup CPU "
           "quota)");
  AddCheckpointFlags(flags);
}

void AddCheckpointFlags(Flags& flags) {
  flags.AddNegatableBool("verify-checksums", CheckpointOptions{}.verify_checksums,
                         "check the CRC-32 of every .pth entry while loading (one extra read)");
}

CheckpointOptions CheckpointOptionsFromFlags(const Flags& flags) {
  CheckpointOptions o;
  o.verify_checksums = flags.Bool("verify-checksums");
  return o;
}

absl::StatusOr<ModelOptions::WeightType> ParseWeightType(const std::string& dt) {
  using W = ModelOptions::WeightType;
  static const std::pair<const char*, W> kNames[] = {
      {"auto", W::kAuto}, {"f32", W::kF32}, {"fp32", W::kF32}, {"bf16", W::kBF16},
      {"int8", W::kI8},   {"int4", W::kI4}, {"f16", W::kF16},  {"fp16", W::kF16}};
  for (const auto& [name, type] : kNames) {
    if (dt == name) return type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype must be auto, f32, bf16, int8, int4 or f16, got '", dt, "'"));
}

absl::StatusOr<ModelOptions> ModelOptionsFromFlags(const Flags& flags, int num_slots) {
  ModelOptions o;
  MODRWKV_ASSIGN_OR_RETURN(o.weight_type, ParseWeightType(flags.Str("dtype")));
  const std::string sdt = flags.Str("state-dtype");
  if (sdt == "f32" || sdt == "fp32") {
    o.state_type = ModelOptions::StateType::kF32;
  } else if (sdt == "f16" || sdt == "fp16") {
    o.state_type = ModelOptions::StateType::kF16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--state-dtype must be f32 or f16, got '", sdt, "'"));
  }
  o.cuda_graphs = flags.Bool("cuda-graphs");
  o.sparse_ffn = flags.Bool("sparse-ffn");
  MODRWKV_ASSIGN_OR_RETURN(int64_t threads, flags.Int("threads", 0, 1024));
  o.threads = static_cast<int>(threads);
  o.num_slots = num_slots;
  o.device = flags.Str("device");
  if (absl::Status st = o.CudaDevice().status(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", st.message()));
  }
  return o;
}

absl::StatusOr<std::unique_ptr<Model>> LoadModelFromFlags(const Flags& flags, int num_slots) {
  MODRWKV_ASSIGN_OR_RETURN(encoders::ModelBundle b, LoadBundleFromFlags(flags, num_slots, nullptr));
  return std::move(b.model);
}

absl::StatusOr<encoders::ModelBundle> LoadBundleFromFlags(const Flags& flags, int num_slots,
                                                          const Tokenizer* tokenizer) {
  MODRWKV_ASSIGN_OR_RETURN(ModelOptions o, ModelOptionsFromFlags(flags, num_slots));
  encoders::BundleOptions bo;
  bo.model = flags.Str("model");
  bo.vision_encoder = flags.Str("vision-encoder");
  bo.audio_encoder = flags.Str("audio-encoder");
  bo.encoder_tf32 = flags.Bool("encoder-tf32");
  return encoders::OpenModelBundle(bo, o, CheckpointOptionsFromFlags(flags), tokenizer);
}

std::string ResolveVocabPath(const std::string& vocab_flag, const std::string& model_path) {
  if (!vocab_flag.empty()) return vocab_flag;
  std::error_code ec;
  if (!model_path.empty()) {
    encoders::BundleOptions bo;
    bo.model = model_path;
    const std::string from_manifest = encoders::BundleVocabPath(bo);
    if (!from_manifest.empty()) return from_manifest;
    const fs::path dir = fs::is_directory(model_path, ec) ? fs::path(model_path)
                                                          : fs::path(model_path).parent_path();
    const fs::path next_to = dir / kVocabName;
    if (fs::exists(next_to, ec)) return next_to.string();
  }
  return DefaultVocabPath();
}

std::string DefaultVocabPath() {
  // Installed layout: <prefix>/bin/modrwkv and <prefix>/share/modrwkv/<vocab>; build tree: the
  // source tree's assets/.
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = exe.parent_path().parent_path() / "share" / "modrwkv" / kVocabName;
    if (fs::exists(installed)) return installed.string();
  }
  return std::string(MODRWKV_ASSETS_DIR) + "/" + kVocabName;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& vocab_flag,
                                                         const std::string& model_path) {
  const std::string path = ResolveVocabPath(vocab_flag, model_path);
  std::error_code ec;
  if (fs::exists(path, ec)) return Tokenizer::LoadFile(path);
  return absl::NotFoundError(absl::StrCat("no vocabulary: pass --vocab or put ", kVocabName,
                                          " next to the model (looked in ", path, ")"));
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part :
       absl::StrSplit(text, absl::ByAnyChar(", \t\n"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not a token id (non-negative integer)"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace modrwkv::cli

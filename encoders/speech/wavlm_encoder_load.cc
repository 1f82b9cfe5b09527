// WavlmEncoder construction: tensor lookup with shape checks, conversion to f32, the weight norm
// of the positional convolution, reordering of conv weights for the GEMM, panel packing.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "encoders/speech/wavlm_encoder.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::encoders {
namespace {

// Looks tensors up under a prefix and checks their shapes.
class Tensors {
 public:
  Tensors(const std::map<std::string, TensorView>& tensors, std::string prefix)
      : tensors_(tensors), prefix_(std::move(prefix)) {}

  bool Has(const std::string& key) const { return tensors_.count(prefix_ + key) > 0; }

  absl::StatusOr<std::vector<float>> Floats(const std::string& key,
                                            const std::vector<int64_t>& shape) const {
    const std::string name = prefix_ + key;
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::NotFoundError(
          absl::StrCat("missing tensor ", name, " (expected shape ", ShapeToString(shape), ")"));
    }
    const TensorView& t = it->second;
    if (t.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", name, " has shape ", t.ShapeString(), ", expected ", ShapeToString(shape)));
    }
    if (t.nbytes < static_cast<size_t>(t.numel()) * DTypeSize(t.dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " holds ", t.nbytes, " bytes, fewer than its shape needs"));
    }
    std::vector<float> v(static_cast<size_t>(t.numel()));
    ConvertToF32(t.dtype, t.data, v.size(), v.data());
    return v;
  }

 private:
  const std::map<std::string, TensorView>& tensors_;
  std::string prefix_;
};

// Packs W [rows][cols] (row-major f32) for the panel GEMM.
cpu::Matrix Pack(const std::vector<float>& w, int64_t rows, int64_t cols) {
  TensorView v;
  v.dtype = DType::kF32;
  v.shape = {rows, cols};
  v.data = w.data();
  v.nbytes = w.size() * 4;
  return cpu::MakeMatrix(v, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
}

// Conv1d weight [out][in][k] -> [out][k*in] in (k, c) order: the order of a window of
// time-major activations.
std::vector<float> KernelMajor(const std::vector<float>& w, int64_t out, int64_t in, int64_t k) {
  std::vector<float> r(w.size());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t j = 0; j < k; ++j) r[(o * k + j) * in + c] = w[(o * in + c) * k + j];
  return r;
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WavlmEncoder>> WavlmEncoder::Create(
    const WavlmConfig& config, const std::map<std::string, TensorView>& tensors,
    const std::string& prefix) {
  MODRWKV_RETURN_IF_ERROR(config.Validate());
  const Tensors src(tensors, prefix);
  const int64_t d = config.hidden_size, f = config.intermediate_size,
                heads = config.num_attention_heads, hd = config.head_dim();
  std::unique_ptr<WavlmEncoder> e(new WavlmEncoder(config));

  const bool group = config.feat_extract_norm == "group";
  int64_t in = 1;
  for (int i = 0; i < config.conv_layers(); ++i) {
    WavlmConv& cv = e->stem_.convs.emplace_back();
    cv.in = static_cast<int>(in);
    cv.out = config.conv_dim[i];
    cv.kernel = config.conv_kernel[i];
    cv.stride = config.conv_stride[i];
    const std::string k = absl::StrCat("feature_extractor.conv_layers.", i, ".");
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> w,
                             src.Floats(k + "conv.weight", {cv.out, in, cv.kernel}));
    cv.w = Pack(KernelMajor(w, cv.out, in, cv.kernel), cv.out, cv.kernel * in);
    if (config.conv_bias) {
      MODRWKV_ASSIGN_OR_RETURN(cv.bias, src.Floats(k + "conv.bias", {cv.out}));
    }
    if (!group || i == 0) {
      MODRWKV_ASSIGN_OR_RETURN(cv.norm_w, src.Floats(k + "layer_norm.weight", {cv.out}));
      MODRWKV_ASSIGN_OR_RETURN(cv.norm_b, src.Floats(k + "layer_norm.bias", {cv.out}));
    }
    in = cv.out;
  }
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.proj_ln_w,
                           src.Floats("feature_projection.layer_norm.weight", {in}));
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.proj_ln_b,
                           src.Floats("feature_projection.layer_norm.bias", {in}));
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> proj,
                           src.Floats("feature_projection.projection.weight", {d, in}));
  e->stem_.proj = Pack(proj, d, in);
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.proj_b, src.Floats("feature_projection.projection.bias", {d}));

  // Positional conv: weight = g * v / ||v||, the norm over (out, in) for each tap (dim=2).
  const int64_t groups = config.num_conv_pos_embedding_groups, cg = d / groups,
                kk = config.num_conv_pos_embeddings;
  const std::string pc = "encoder.pos_conv_embed.conv.";
  const bool parametrized = src.Has(pc + "parametrizations.weight.original0") ||
                            src.Has(pc + "parametrizations.weight.original1");
  const std::string g_key = parametrized ? "parametrizations.weight.original0" : "weight_g";
  const std::string v_key = parametrized ? "parametrizations.weight.original1" : "weight_v";
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> g, src.Floats(pc + g_key, {1, 1, kk}));
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> v, src.Floats(pc + v_key, {d, cg, kk}));
  MODRWKV_ASSIGN_OR_RETURN(e->stem_.pos_b, src.Floats(pc + "bias", {d}));
  std::vector<double> norm(kk, 0.0);
  for (int64_t i = 0; i < d * cg; ++i)
    for (int64_t j = 0; j < kk; ++j) norm[j] += double{v[i * kk + j]} * v[i * kk + j];
  for (int64_t j = 0; j < kk; ++j) {
    const double scale = g[j] / std::sqrt(norm[j]);
    for (int64_t i = 0; i < d * cg; ++i) {
      v[i * kk + j] = static_cast<float>(v[i * kk + j] * scale);
    }
  }
  for (int64_t gi = 0; gi < groups; ++gi) {
    const std::vector<float> wg(v.begin() + gi * cg * cg * kk, v.begin() + (gi + 1) * cg * cg * kk);
    e->stem_.pos.push_back(Pack(KernelMajor(wg, cg, cg, kk), cg, kk * cg));
  }
  // encoder.layer_norm: before the layers in the post-LN layout (the stem's last step), after
  // them in the pre-LN one.
  const bool post_ln = !config.do_stable_layer_norm;
  std::vector<float>& ln_w = post_ln ? e->stem_.ln_w : e->final_ln_w_;
  std::vector<float>& ln_b = post_ln ? e->stem_.ln_b : e->final_ln_b_;
  MODRWKV_ASSIGN_OR_RETURN(ln_w, src.Floats("encoder.layer_norm.weight", {d}));
  MODRWKV_ASSIGN_OR_RETURN(ln_b, src.Floats("encoder.layer_norm.bias", {d}));
  MODRWKV_ASSIGN_OR_RETURN(
      e->rel_embed_,
      src.Floats("encoder.layers.0.attention.rel_attn_embed.weight", {config.num_buckets, heads}));

  e->layers_.resize(config.num_hidden_layers);
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    Layer& l = e->layers_[i];
    const std::string k = absl::StrCat("encoder.layers.", i, ".");
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_w, src.Floats(k + "layer_norm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln1_b, src.Floats(k + "layer_norm.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_w, src.Floats(k + "final_layer_norm.weight", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.ln2_b, src.Floats(k + "final_layer_norm.bias", {d}));
    std::vector<float> qkv_w;
    qkv_w.reserve(static_cast<size_t>(3 * d * d));
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      const std::string base = absl::StrCat(k, "attention.", proj);
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> w, src.Floats(base + ".weight", {d, d}));
      MODRWKV_ASSIGN_OR_RETURN(std::vector<float> b, src.Floats(base + ".bias", {d}));
      qkv_w.insert(qkv_w.end(), w.begin(), w.end());
      l.qkv_b.insert(l.qkv_b.end(), b.begin(), b.end());
    }
    l.qkv = Pack(qkv_w, 3 * d, d);
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> out,
                             src.Floats(k + "attention.out_proj.weight", {d, d}));
    l.out = Pack(out, d, d);
    MODRWKV_ASSIGN_OR_RETURN(l.out_b, src.Floats(k + "attention.out_proj.bias", {d}));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_w,
                             src.Floats(k + "attention.gru_rel_pos_linear.weight", {8, hd}));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_b, src.Floats(k + "attention.gru_rel_pos_linear.bias", {8}));
    MODRWKV_ASSIGN_OR_RETURN(l.gate_const,
                             src.Floats(k + "attention.gru_rel_pos_const", {1, heads, 1, 1}));
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> fc1,
                             src.Floats(k + "feed_forward.intermediate_dense.weight", {f, d}));
    l.fc1 = Pack(fc1, f, d);
    MODRWKV_ASSIGN_OR_RETURN(l.fc1_b, src.Floats(k + "feed_forward.intermediate_dense.bias", {f}));
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> fc2,
                             src.Floats(k + "feed_forward.output_dense.weight", {d, f}));
    l.fc2 = Pack(fc2, d, f);
    MODRWKV_ASSIGN_OR_RETURN(l.fc2_b, src.Floats(k + "feed_forward.output_dense.bias", {d}));
  }
  return e;
}

absl::StatusOr<std::unique_ptr<WavlmEncoder>> WavlmEncoder::Load(const std::string& hf_folder) {
  const std::filesystem::path dir(hf_folder);
  MODRWKV_ASSIGN_OR_RETURN(std::string json, ReadFile(dir / "config.json"));
  auto config = ParseWavlmConfig(json);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat((dir / "config.json").string(), ": ",
                                                             config.status().message()));
  }
  std::filesystem::path weights = dir / "model.safetensors";
  if (!std::filesystem::exists(weights)) weights = dir / "pytorch_model.bin";
  if (!std::filesystem::exists(weights)) {
    return absl::NotFoundError(
        absl::StrCat("no model.safetensors or pytorch_model.bin in ", hf_folder));
  }
  MODRWKV_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(weights.string()));
  const auto& tensors = ckpt->tensors();
  std::string prefix;
  for (const char* p : {"wavlm.", "model."}) {
    auto it = tensors.lower_bound(p);
    if (it != tensors.end() && it->first.rfind(p, 0) == 0) {
      prefix = p;
      break;
    }
  }
  auto encoder = Create(*config, tensors, prefix);
  if (!encoder.ok()) {
    return absl::Status(encoder.status().code(),
                        absl::StrCat(weights.string(), ": ", encoder.status().message()));
  }
  return encoder;
}

}  // namespace modrwkv::encoders

#include "engine/model/rwkv7_weights.h"

#include <algorithm>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace modrwkv {
namespace {

// Maps BlinkDL names to fla names (and says whether fla stores the matrix transposed relative to
// BlinkDL). Only used when the checkpoint is in fla naming.
struct NameMapper {
  bool fla = false;

  // BlinkDL global name -> file name.
  std::string Global(const std::string& blink) const {
    if (!fla) return blink;
    if (blink == "emb.weight") return "model.embeddings.weight";
    if (blink == "head.weight") return "lm_head.weight";
    if (absl::StartsWith(blink, "ln_out.")) return "model.norm." + blink.substr(7);
    return blink;
  }

  // BlinkDL per-layer suffix (e.g. "att.w1") -> file name; sets *flip when the fla tensor is the
  // transpose of the BlinkDL one.
  std::string Layer(int i, const std::string& suffix, bool* flip) const {
    *flip = false;
    if (!fla) return absl::StrCat("blocks.", i, ".", suffix);
    const std::string p = absl::StrCat("model.layers.", i, ".");
    static const std::pair<const char*, const char*> kRenames[] = {
        {"ln0.", "pre_norm."},           {"ln1.", "attn_norm."},
        {"ln2.", "ffn_norm."},           {"att.receptance.", "attn.r_proj."},
        {"att.key.", "attn.k_proj."},    {"att.value.", "attn.v_proj."},
        {"att.output.", "attn.o_proj."}, {"att.ln_x.", "attn.g_norm."},
    };
    for (const auto& [from, to] : kRenames) {
      if (absl::StartsWith(suffix, from)) return p + to + suffix.substr(std::string(from).size());
    }
    // LoRA: att.X1 -> attn.X_lora.lora.0.weight (transposed), att.X2 -> lora.2.weight
    // (transposed), att.X0 -> lora.2.bias.
    if (absl::StartsWith(suffix, "att.") && suffix.size() == 6 &&
        std::string("wavg").find(suffix[4]) != std::string::npos &&
        (suffix[5] == '0' || suffix[5] == '1' || suffix[5] == '2')) {
      const std::string lora = p + "attn." + suffix[4] + "_lora.lora.";
      if (suffix[5] == '0') return lora + "2.bias";
      *flip = true;
      return lora + (suffix[5] == '1' ? "0.weight" : "2.weight");
    }
    if (absl::StartsWith(suffix, "att.")) return p + "attn." + suffix.substr(4);
    return p + suffix;
  }
};

class Resolver {
 public:
  Resolver(const std::map<std::string, TensorView>& t, NameMapper m) : tensors_(t), names_(m) {}

  const TensorView* Find(const std::string& file_name) const {
    auto it = tensors_.find(file_name);
    return it == tensors_.end() ? nullptr : &it->second;
  }

  absl::Status Missing(const std::string& file_name, const std::string& expected) const {
    return absl::NotFoundError(absl::StrFormat(
        "checkpoint has no tensor %s (expected shape %s); not an RWKV7 checkpoint or incomplete",
        file_name, expected));
  }

  // A vector of n values; accepts [n], [1,1,n] and any shape of ones around n.
  absl::Status Vector(const std::string& file_name, int64_t n, WeightRef* out,
                      bool optional = false) {
    const TensorView* v = Find(file_name);
    if (!v) {
      if (optional) return absl::OkStatus();
      return Missing(file_name, absl::StrFormat("[%d]", n));
    }
    if (v->numel() != n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor %s has shape %s, expected [%d] (or [1,1,%d])", file_name,
                          v->ShapeString(), n, n));
    }
    MODRWKV_RETURN_IF_ERROR(CheckDType(*v));
    *out = WeightRef{v, false, file_name};
    param_count_ += v->numel();
    return absl::OkStatus();
  }

  // A matrix whose Linear-convention shape is [out, in]. `stored_transposed`: the file keeps it as
  // [in, out].
  absl::Status Matrix(const std::string& file_name, int64_t out_dim, int64_t in_dim,
                      bool stored_transposed, WeightRef* out, bool optional = false) {
    const TensorView* v = Find(file_name);
    const int64_t d0 = stored_transposed ? in_dim : out_dim;
    const int64_t d1 = stored_transposed ? out_dim : in_dim;
    if (!v) {
      if (optional) return absl::OkStatus();
      return Missing(file_name, ShapeToString({d0, d1}));
    }
    if (v->shape.size() != 2 || v->shape[0] != d0 || v->shape[1] != d1) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor %s has shape %s, expected %s",
                                                        file_name, v->ShapeString(),
                                                        ShapeToString({d0, d1})));
    }
    MODRWKV_RETURN_IF_ERROR(CheckDType(*v));
    *out = WeightRef{v, stored_transposed, file_name};
    param_count_ += v->numel();
    return absl::OkStatus();
  }

  // Reads a 2-D shape without validating it (used to infer sizes).
  absl::StatusOr<std::pair<int64_t, int64_t>> Shape2(const std::string& file_name) const {
    const TensorView* v = Find(file_name);
    if (!v) return Missing(file_name, "[?,?]");
    if (v->shape.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor %s has shape %s, expected 2 dims", file_name, v->ShapeString()));
    }
    return std::make_pair(v->shape[0], v->shape[1]);
  }

  // LoRA rank from x1 ([C, D] in BlinkDL, [D, C] in fla).
  absl::StatusOr<int> LoraRank(int layer, char x, int64_t c) const {
    bool flip;
    const std::string name =
        names_.Layer(layer, absl::StrCat("att.", std::string(1, x), "1"), &flip);
    MODRWKV_ASSIGN_OR_RETURN(auto shape, Shape2(name));
    const int64_t d = flip ? shape.first : shape.second;
    const int64_t cc = flip ? shape.second : shape.first;
    if (cc != c || d <= 0 || d > 65536) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor %s has shape %s, expected [%d,D] (LoRA down-projection)", name,
                          ShapeToString({shape.first, shape.second}), c));
    }
    return static_cast<int>(d);
  }

  const NameMapper& names() const { return names_; }
  int64_t param_count() const { return param_count_; }

 private:
  static absl::Status CheckDType(const TensorView& v) {
    if (v.dtype == DType::kF32 || v.dtype == DType::kBF16 || v.dtype == DType::kF16) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("tensor ", v.name, " has an unsupported dtype"));
  }

  const std::map<std::string, TensorView>& tensors_;
  NameMapper names_;
  int64_t param_count_ = 0;
};

}  // namespace

absl::StatusOr<Rwkv7Refs> ResolveRwkv7(const std::map<std::string, TensorView>& tensors) {
  NameMapper names;
  if (tensors.count("model.embeddings.weight")) {
    names.fla = true;
  } else if (!tensors.count("emb.weight")) {
    return absl::InvalidArgumentError(
        "not an RWKV7 checkpoint: no emb.weight (BlinkDL names) or model.embeddings.weight "
        "(Hugging Face fla names)");
  }
  Resolver r(tensors, names);
  Rwkv7Refs refs;
  refs.fla_names = names.fla;
  ModelConfig& cfg = refs.config;

  // Sizes from shapes: emb [V, C]; r_k [H, N]; layer count from the highest block index.
  MODRWKV_ASSIGN_OR_RETURN(auto emb_shape, r.Shape2(names.Global("emb.weight")));
  cfg.vocab_size = static_cast<int>(emb_shape.first);
  cfg.n_embd = static_cast<int>(emb_shape.second);
  bool flip;
  MODRWKV_ASSIGN_OR_RETURN(auto rk_shape, r.Shape2(names.Layer(0, "att.r_k", &flip)));
  cfg.n_head = static_cast<int>(rk_shape.first);
  cfg.head_size = static_cast<int>(rk_shape.second);
  if (cfg.head_size != 64 || cfg.n_head * 64 != cfg.n_embd || cfg.vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "unsupported RWKV7 shape: emb %s and att.r_k [%d,%d]; need head size 64 and C = H*64",
        ShapeToString({emb_shape.first, emb_shape.second}), cfg.n_head, cfg.head_size));
  }
  const std::string layer_prefix = names.fla ? "model.layers." : "blocks.";
  int max_layer = -1;
  for (const auto& [name, view] : tensors) {
    if (!absl::StartsWith(name, layer_prefix)) continue;
    const std::string rest = name.substr(layer_prefix.size());
    int idx;
    if (absl::SimpleAtoi(rest.substr(0, rest.find('.')), &idx) && idx >= 0 && idx < 4096) {
      max_layer = std::max(max_layer, idx);
    }
  }
  cfg.n_layer = max_layer + 1;
  if (cfg.n_layer <= 0) return absl::InvalidArgumentError("checkpoint has no layers");
  const int64_t C = cfg.n_embd;
  MODRWKV_ASSIGN_OR_RETURN(auto ffn_shape, r.Shape2(names.Layer(0, "ffn.key.weight", &flip)));
  cfg.ffn_size = static_cast<int>(ffn_shape.first);
  MODRWKV_ASSIGN_OR_RETURN(cfg.d_decay, r.LoraRank(0, 'w', C));
  MODRWKV_ASSIGN_OR_RETURN(cfg.d_aaa, r.LoraRank(0, 'a', C));
  MODRWKV_ASSIGN_OR_RETURN(cfg.d_gate, r.LoraRank(0, 'g', C));
  cfg.d_mv = 0;
  if (cfg.n_layer > 1) {
    MODRWKV_ASSIGN_OR_RETURN(cfg.d_mv, r.LoraRank(1, 'v', C));
  }
  const int64_t F = cfg.ffn_size;

  MODRWKV_RETURN_IF_ERROR(
      r.Matrix(names.Global("emb.weight"), cfg.vocab_size, C, false, &refs.emb));
  MODRWKV_RETURN_IF_ERROR(
      r.Matrix(names.Global("head.weight"), cfg.vocab_size, C, false, &refs.head));
  MODRWKV_RETURN_IF_ERROR(r.Vector(names.Global("ln_out.weight"), C, &refs.ln_out_w));
  MODRWKV_RETURN_IF_ERROR(r.Vector(names.Global("ln_out.bias"), C, &refs.ln_out_b));
  MODRWKV_RETURN_IF_ERROR(r.Vector(names.Layer(0, "ln0.weight", &flip), C, &refs.ln0_w));
  MODRWKV_RETURN_IF_ERROR(r.Vector(names.Layer(0, "ln0.bias", &flip), C, &refs.ln0_b));
  refs.matrix_dtype = refs.head.view->dtype;

  refs.layers.resize(cfg.n_layer);
  for (int i = 0; i < cfg.n_layer; ++i) {
    Rwkv7LayerRefs& l = refs.layers[i];
    auto vec = [&](const char* suffix, WeightRef* out, int64_t n, bool optional = false) {
      bool f;
      return r.Vector(names.Layer(i, suffix, &f), n, out, optional);
    };
    // `blink_transposed`: BlinkDL stores this one as [in, out]; fla stores LoRA as [out, in].
    auto mat = [&](const char* suffix, WeightRef* out, int64_t o, int64_t in, bool blink_transposed,
                   bool optional = false) {
      bool f;
      const std::string name = names.Layer(i, suffix, &f);
      const bool stored_transposed = blink_transposed && !f;
      return r.Matrix(name, o, in, stored_transposed, out, optional);
    };
    MODRWKV_RETURN_IF_ERROR(vec("ln1.weight", &l.ln1_w, C));
    MODRWKV_RETURN_IF_ERROR(vec("ln1.bias", &l.ln1_b, C));
    MODRWKV_RETURN_IF_ERROR(vec("ln2.weight", &l.ln2_w, C));
    MODRWKV_RETURN_IF_ERROR(vec("ln2.bias", &l.ln2_b, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_r", &l.x_r, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_w", &l.x_w, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_k", &l.x_k, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_v", &l.x_v, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_a", &l.x_a, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.x_g", &l.x_g, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.w0", &l.w0, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.a0", &l.a0, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.k_k", &l.k_k, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.k_a", &l.k_a, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.r_k", &l.r_k, C));
    MODRWKV_RETURN_IF_ERROR(mat("att.w1", &l.w1, cfg.d_decay, C, true));
    MODRWKV_RETURN_IF_ERROR(mat("att.w2", &l.w2, C, cfg.d_decay, true));
    MODRWKV_RETURN_IF_ERROR(mat("att.a1", &l.a1, cfg.d_aaa, C, true));
    MODRWKV_RETURN_IF_ERROR(mat("att.a2", &l.a2, C, cfg.d_aaa, true));
    MODRWKV_RETURN_IF_ERROR(mat("att.g1", &l.g1, cfg.d_gate, C, true));
    MODRWKV_RETURN_IF_ERROR(mat("att.g2", &l.g2, C, cfg.d_gate, true));
    if (i > 0) {  // layer 0 keeps v_first = v; its v0/v1/v2 are unused (and often present)
      MODRWKV_RETURN_IF_ERROR(vec("att.v0", &l.v0, C));
      MODRWKV_RETURN_IF_ERROR(mat("att.v1", &l.v1, cfg.d_mv, C, true));
      MODRWKV_RETURN_IF_ERROR(mat("att.v2", &l.v2, C, cfg.d_mv, true));
    }
    MODRWKV_RETURN_IF_ERROR(mat("att.receptance.weight", &l.wr, C, C, false));
    MODRWKV_RETURN_IF_ERROR(mat("att.key.weight", &l.wk, C, C, false));
    MODRWKV_RETURN_IF_ERROR(mat("att.value.weight", &l.wv, C, C, false));
    MODRWKV_RETURN_IF_ERROR(mat("att.output.weight", &l.wo, C, C, false));
    MODRWKV_RETURN_IF_ERROR(vec("att.ln_x.weight", &l.lnx_w, C));
    MODRWKV_RETURN_IF_ERROR(vec("att.ln_x.bias", &l.lnx_b, C));
    MODRWKV_RETURN_IF_ERROR(vec("ffn.x_k", &l.ffn_x_k, C));
    MODRWKV_RETURN_IF_ERROR(mat("ffn.key.weight", &l.ffn_key, F, C, false));
    MODRWKV_RETURN_IF_ERROR(mat("ffn.value.weight", &l.ffn_value, C, F, false));
  }
  refs.parameter_count = r.param_count();
  return refs;
}

namespace {

uint64_t Mix(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint64_t MixRef(uint64_t h, const WeightRef& r) {
  if (!r.present()) return Mix(h, "-", 1);
  const TensorView& v = *r.view;
  h = Mix(h, r.canonical_name.data(), r.canonical_name.size());
  for (int64_t d : v.shape) h = Mix(h, &d, sizeof d);
  const size_t k = std::min<size_t>(v.nbytes, 256);
  h = Mix(h, v.data, k);
  h = Mix(h, static_cast<const char*>(v.data) + (v.nbytes - k), k);
  return Mix(h, static_cast<const char*>(v.data) + v.nbytes / 2 / 64 * 64, std::min<size_t>(k, 64));
}

}  // namespace

uint64_t FingerprintRwkv7(const Rwkv7Refs& refs) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const WeightRef* r :
       {&refs.emb, &refs.ln0_w, &refs.ln0_b, &refs.ln_out_w, &refs.ln_out_b, &refs.head}) {
    h = MixRef(h, *r);
  }
  for (const Rwkv7LayerRefs& l : refs.layers) {
    for (const WeightRef* r :
         {&l.ln1_w, &l.ln1_b, &l.ln2_w, &l.ln2_b,   &l.x_r,     &l.x_w,      &l.x_k, &l.x_v, &l.x_a,
          &l.x_g,   &l.w0,    &l.a0,    &l.v0,      &l.k_k,     &l.k_a,      &l.r_k, &l.w1,  &l.w2,
          &l.a1,    &l.a2,    &l.v1,    &l.v2,      &l.g1,      &l.g2,       &l.wr,  &l.wk,  &l.wv,
          &l.wo,    &l.lnx_w, &l.lnx_b, &l.ffn_x_k, &l.ffn_key, &l.ffn_value}) {
      h = MixRef(h, *r);
    }
  }
  return h;
}

}  // namespace modrwkv

// Tensor resolution: sizes inferred from shapes, BlinkDL and fla names, clear refusals.
#include "engine/model/rwkv7_weights.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/loader/model_loader.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

std::vector<OwnedTensor> Random(int layers = 2, int c = 128, int v = 300) {
  RandomModelSpec s;
  s.n_layer = layers;
  s.n_embd = c;
  s.vocab_size = v;
  s.seed = 9;
  return MakeRandomRwkv7(s).value();
}

OwnedTensor* FindT(std::vector<OwnedTensor>& t, const std::string& name) {
  for (auto& x : t)
    if (x.name == name) return &x;
  return nullptr;
}

TEST(ResolveRwkv7, InfersEverySizeFromShapes) {
  auto t = Random(3, 192, 300);
  auto refs = ResolveRwkv7(ViewsOf(t));
  ASSERT_TRUE(refs.ok()) << refs.status();
  const ModelConfig& c = refs->config;
  EXPECT_EQ(c.n_layer, 3);
  EXPECT_EQ(c.n_embd, 192);
  EXPECT_EQ(c.n_head, 3);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_EQ(c.ffn_size, 768);
  const LoraRanks r = LoraRanksFor(192);
  EXPECT_EQ(c.d_decay, r.w);
  EXPECT_EQ(c.d_aaa, r.a);
  EXPECT_EQ(c.d_mv, r.v);
  EXPECT_EQ(c.d_gate, r.g);
  EXPECT_FALSE(refs->fla_names);
  EXPECT_TRUE(refs->layers[0].w1.transposed);  // BlinkDL LoRA is [in, out]
  EXPECT_FALSE(refs->layers[0].wr.transposed);
  EXPECT_FALSE(refs->layers[0].v1.present());  // layer 0's v LoRA is unused
  EXPECT_TRUE(refs->layers[1].v1.present());
}

TEST(ResolveRwkv7, MissingTensorIsNamed) {
  auto t = Random();
  t.erase(std::remove_if(t.begin(), t.end(),
                         [](const OwnedTensor& x) { return x.name == "blocks.1.att.key.weight"; }),
          t.end());
  auto refs = ResolveRwkv7(ViewsOf(t));
  ASSERT_FALSE(refs.ok());
  EXPECT_TRUE(absl::StrContains(refs.status().message(), "blocks.1.att.key.weight"))
      << refs.status();
  EXPECT_TRUE(absl::StrContains(refs.status().message(), "[128,128]")) << refs.status();
}

TEST(ResolveRwkv7, WrongShapeNamesTensorAndExpectedShape) {
  auto t = Random();
  OwnedTensor* k = FindT(t, "blocks.1.att.key.weight");
  k->shape = {128, 64};
  k->bytes.resize(128 * 64 * 4);
  auto refs = ResolveRwkv7(ViewsOf(t));
  ASSERT_FALSE(refs.ok());
  EXPECT_EQ(refs.status().message(),
            "tensor blocks.1.att.key.weight has shape [128,64], expected [128,128]");
  t = Random();
  FindT(t, "blocks.0.ln1.weight")->shape = {2, 64};  // same count, fine as a vector
  EXPECT_TRUE(ResolveRwkv7(ViewsOf(t)).ok());
  t = Random();
  OwnedTensor* ln = FindT(t, "blocks.0.ln1.weight");
  ln->shape = {100};
  ln->bytes.resize(400);
  refs = ResolveRwkv7(ViewsOf(t));
  ASSERT_FALSE(refs.ok());
  EXPECT_TRUE(absl::StrContains(refs.status().message(), "blocks.0.ln1.weight has shape [100]"));
}

TEST(ResolveRwkv7, RefusesNonRwkv7) {
  std::vector<OwnedTensor> t(1);
  t[0].name = "model.layers.0.self_attn.q_proj.weight";
  t[0].shape = {4, 4};
  t[0].bytes.resize(64);
  auto refs = ResolveRwkv7(ViewsOf(t));
  ASSERT_FALSE(refs.ok());
  EXPECT_TRUE(absl::StrContains(refs.status().message(), "not an RWKV7 checkpoint"));
  // Head size other than 64.
  auto r = Random();
  OwnedTensor* rk = FindT(r, "blocks.0.att.r_k");
  rk->shape = {4, 32};
  refs = ResolveRwkv7(ViewsOf(r));
  ASSERT_FALSE(refs.ok());
  EXPECT_TRUE(absl::StrContains(refs.status().message(), "head size 64"));
}

// BlinkDL -> fla names (ARCHITECTURE.md mapping), transposing the LoRA matrices as fla stores them.
std::vector<OwnedTensor> ToFla(const std::vector<OwnedTensor>& in) {
  std::vector<OwnedTensor> out;
  for (const OwnedTensor& t : in) {
    OwnedTensor o = t;
    std::string n = t.name;
    auto rep = [&](const std::string& a, const std::string& b) {
      if (auto p = n.find(a); p != std::string::npos) n.replace(p, a.size(), b);
    };
    if (n == "emb.weight") n = "model.embeddings.weight";
    if (n == "head.weight") n = "lm_head.weight";
    rep("ln_out.", "model.norm.");
    rep("blocks.", "model.layers.");
    rep(".ln0.", ".pre_norm.");
    rep(".ln1.", ".attn_norm.");
    rep(".ln2.", ".ffn_norm.");
    rep(".att.receptance.", ".attn.r_proj.");
    rep(".att.key.", ".attn.k_proj.");
    rep(".att.value.", ".attn.v_proj.");
    rep(".att.output.", ".attn.o_proj.");
    rep(".att.ln_x.", ".attn.g_norm.");
    const std::string tail = n.substr(n.rfind('.') + 1);
    if (n.find(".att.") != std::string::npos && tail.size() == 2 &&
        std::string("wavg").find(tail[0]) != std::string::npos && tail[1] >= '0' &&
        tail[1] <= '2') {
      const std::string base = n.substr(0, n.rfind(".att.")) + ".attn." + tail[0] + "_lora.lora.";
      if (tail[1] == '0') {
        n = base + "2.bias";
        o.shape = {t.shape.back()};
      } else {
        n = base + (tail[1] == '1' ? "0.weight" : "2.weight");
        const int64_t r = t.shape[0], c = t.shape[1];
        o.shape = {c, r};
        const float* s = reinterpret_cast<const float*>(t.bytes.data());
        float* d = reinterpret_cast<float*>(o.bytes.data());
        for (int64_t i = 0; i < r; ++i)
          for (int64_t j = 0; j < c; ++j) d[j * r + i] = s[i * c + j];
      }
    }
    rep(".att.", ".attn.");
    o.name = n;
    out.push_back(std::move(o));
  }
  return out;
}

TEST(ResolveRwkv7, FlaNamesGiveTheSameModel) {
  auto blink = Random();
  auto fla = ToFla(blink);
  auto refs = ResolveRwkv7(ViewsOf(fla));
  ASSERT_TRUE(refs.ok()) << refs.status();
  EXPECT_TRUE(refs->fla_names);
  EXPECT_FALSE(refs->layers[0].w1.transposed);
  ModelOptions o;
  o.weight_type = ModelOptions::WeightType::kF32;
  auto a = CreateModel(ViewsOf(blink), o), b = CreateModel(ViewsOf(fla), o);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<int32_t> toks = {3, 1, 4, 1, 5, 9, 2, 6};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(toks)};
  e.output = StepOutput::kLogits;
  std::vector<StepResult> ra, rb;
  ASSERT_TRUE((*a)->Step({e}, &ra).ok());
  ASSERT_TRUE((*b)->Step({e}, &rb).ok());
  ASSERT_EQ(ra[0].logits.size(), rb[0].logits.size());
  for (size_t i = 0; i < ra[0].logits.size(); ++i) ASSERT_EQ(ra[0].logits[i], rb[0].logits[i]);
}

}  // namespace
}  // namespace modrwkv

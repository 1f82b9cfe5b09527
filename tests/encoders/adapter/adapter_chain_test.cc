// Tests encoders/adapter/adapter_chain: golden outputs of the official adapter modules
// (tests/golden/adapter, tools/golden/gen_adapter_fixtures.py), width checks, conv lengths,
// the JSON form and concurrent runs.
#include "encoders/adapter/adapter_chain.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/golden_floats.h"

namespace modrwkv::encoders {
namespace {

using golden::MaxRelDiff;
using golden::ReadF32;
using ::testing::HasSubstr;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/adapter/";

nlohmann::json Manifest() {
  std::ifstream f(kDir + "manifest.json");
  return nlohmann::json::parse(f);
}

// The preset named in the manifest, built by the C++ function of that name.
AdapterSpec Preset(const std::string& name) {
  static const std::map<std::string, std::function<AdapterSpec()>> presets = {
      {"VisionAdapterA()", [] { return VisionAdapterA(); }},
      {"VisionAdapterB(false)", [] { return VisionAdapterB(false); }},
      {"VisionAdapterB(true)", [] { return VisionAdapterB(true); }},
      {"SpeechAdapterA(2)", [] { return SpeechAdapterA(2); }},
      {"SpeechAdapterA(0)", [] { return SpeechAdapterA(0); }},
      {"ConvCompressionAdapter(3, 2)", [] { return ConvCompressionAdapter(3, 2); }},
      {"ConvCompressionAdapter(4, 3)", [] { return ConvCompressionAdapter(4, 3); }},
      {"ConvCompressionAdapter(5, 4)", [] { return ConvCompressionAdapter(5, 4); }},
      {"ConvProjectorC()", [] { return ConvProjectorC(); }},
      {"PixelShuffleProjectorC()", [] { return PixelShuffleProjectorC(); }},
      {"SpeechAdapterATransformer(4)", [] { return SpeechAdapterATransformer(4); }},
      {"SpeechAdapterATransformer(8)", [] { return SpeechAdapterATransformer(8); }},
  };
  auto it = presets.find(name);
  EXPECT_NE(it, presets.end()) << name;
  return it == presets.end() ? AdapterSpec{} : it->second();
}

TEST(AdapterChainGolden, MatchesOfficialModules) {
  const nlohmann::json manifest = Manifest();
  ASSERT_EQ(manifest["cases"].size(), 14u);
  cpu::ThreadPool pool(2);
  for (const nlohmann::json& c : manifest["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    auto ckpt = Checkpoint::Open(kDir + name + ".safetensors");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    // Through the JSON form, as a manifest would give it: a preset's, or the case's own chain.
    auto spec = ParseAdapterSpec(c.contains("chain") ? c["chain"].dump()
                                                     : AdapterSpecToJson(Preset(c["preset"])));
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto chain = AdapterChain::Create(*spec, (*ckpt)->tensors(), c["prefix"]);
    ASSERT_TRUE(chain.ok()) << chain.status();
    const int rows = c["input_rows"];
    EXPECT_EQ((*chain)->input_dim(), c["input_dim"].get<int>());
    EXPECT_EQ((*chain)->output_dim(), c["output_dim"].get<int>());
    EXPECT_EQ((*chain)->OutputRows(rows), c["output_rows"].get<int>());
    const std::vector<float> in = ReadF32(kDir + name + "_input.bin");
    const std::vector<float> want = ReadF32(kDir + name + "_output.bin");
    ASSERT_EQ(in.size(), static_cast<size_t>(rows) * (*chain)->input_dim());
    for (cpu::ThreadPool* p : {&pool, static_cast<cpu::ThreadPool*>(nullptr)}) {
      std::vector<float> out;
      ASSERT_TRUE((*chain)->Run(in, rows, &out, p).ok());
      ASSERT_EQ(out.size(), want.size());
      const double rel = MaxRelDiff(out, want);
      EXPECT_LT(rel, 1e-4);
      if (p) std::printf("  %-33s max rel diff %.2e\n", name.c_str(), rel);
    }
  }
}

// Synthetic tensors for shape tests: owned f32 data with views into it.
struct Tensors {
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, TensorView> views;
  void Add(const std::string& name, std::vector<int64_t> shape, float value = 0.01f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    auto& d = data[name];
    d.assign(n, value);
    for (int64_t i = 0; i < n; ++i) d[i] = value * static_cast<float>((i % 7) - 3);
    TensorView v;
    v.name = name;
    v.shape = std::move(shape);
    v.data = d.data();
    v.nbytes = n * 4;
    views[name] = v;
  }
};

Tensors VisionA(int enc, int hidden, int c) {
  Tensors t;
  t.Add("a.proj.0.weight", {hidden, enc});
  t.Add("a.proj.0.bias", {hidden});
  t.Add("a.proj.2.weight", {c, hidden});
  t.Add("a.proj.2.bias", {c});
  t.Add("a.pre_norm.weight", {c}, 1.0f);
  t.Add("a.pre_norm.bias", {c});
  return t;
}

TEST(AdapterChain, WidthsComeFromShapes) {
  Tensors t = VisionA(40, 96, 72);
  auto chain = AdapterChain::Create(VisionAdapterA(), t.views, "a.");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ((*chain)->input_dim(), 40);
  EXPECT_EQ((*chain)->output_dim(), 72);
  EXPECT_EQ((*chain)->OutputRows(577), 577);
}

TEST(AdapterChain, WidthMismatchNamesTheTensor) {
  Tensors t = VisionA(40, 96, 72);
  t.Add("a.proj.2.weight", {72, 95});
  auto chain = AdapterChain::Create(VisionAdapterA(), t.views, "a.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("a.proj.2.weight takes width 95"));
  EXPECT_THAT(chain.status().message(), HasSubstr("gives 96"));

  Tensors n = VisionA(40, 96, 72);
  n.Add("a.pre_norm.weight", {64});
  n.Add("a.pre_norm.bias", {64});
  chain = AdapterChain::Create(VisionAdapterA(), n.views, "a.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("a.pre_norm.weight takes width 64"));

  Tensors b = VisionA(40, 96, 72);
  b.Add("a.proj.0.bias", {95});
  chain = AdapterChain::Create(VisionAdapterA(), b.views, "a.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("a.proj.0.bias has shape [95], expected [96]"));
}

TEST(AdapterChain, MissingAndUnexpectedTensorsAreNamed) {
  Tensors t = VisionA(40, 96, 72);
  t.views.erase("a.proj.2.bias");
  auto chain = AdapterChain::Create(VisionAdapterA(), t.views, "a.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("a.proj.2.bias is missing"));

  Tensors u = VisionA(40, 96, 72);
  AdapterSpec no_bias = VisionAdapterA();
  no_bias.layers[0].bias = false;
  chain = AdapterChain::Create(no_bias, u.views, "a.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("a.proj.0.bias is present"));

  chain = AdapterChain::Create(VisionAdapterA(), u.views, "b.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("b.proj.0.weight is missing"));
}

Tensors ConvMlp(int enc, int k, int c, bool bias) {
  Tensors t;
  t.Add("conv.weight", {enc, enc, k});
  if (bias) t.Add("conv.bias", {enc});
  t.Add("mlp.0.weight", {4 * c, enc});
  t.Add("mlp.0.bias", {4 * c});
  t.Add("mlp.2.weight", {c, 4 * c});
  t.Add("mlp.2.bias", {c});
  t.Add("pre_norm.weight", {c}, 1.0f);
  t.Add("pre_norm.bias", {c});
  return t;
}

TEST(AdapterChain, ConvOutputLengths) {
  // The paper's compression settings on SigLIP's 577 rows: 288 / 192 / 144.
  const int want[3][3] = {{3, 2, 288}, {4, 3, 192}, {5, 4, 144}};
  for (const auto& w : want) {
    Tensors t = ConvMlp(16, w[0], 8, false);
    auto chain = AdapterChain::Create(ConvCompressionAdapter(w[0], w[1]), t.views, "");
    ASSERT_TRUE(chain.ok()) << chain.status();
    EXPECT_EQ((*chain)->OutputRows(577), w[2]) << w[0] << "," << w[1];
  }
  // Generation B's conv (k3 s2) on 576 rows: 287.
  Tensors b = ConvMlp(16, 3, 8, false);
  auto chain_b = AdapterChain::Create(VisionAdapterB(true), b.views, "");
  ASSERT_TRUE(chain_b.ok());
  EXPECT_EQ((*chain_b)->OutputRows(576), 287);
  // Generation C's conv (k6 s5) on 576 rows: 115.
  Tensors c = ConvMlp(16, 6, 8, false);
  c.views.erase("pre_norm.weight");
  auto chain_c = AdapterChain::Create(ConvProjectorC(), c.views, "");
  ASSERT_TRUE(chain_c.ok()) << chain_c.status();
  EXPECT_EQ((*chain_c)->OutputRows(576), 115);
  // Speech, padding 2: floor((T + 4 - 3) / 2) + 1; Whisper's 1500 frames -> 751.
  Tensors s;
  s.Add("conv.weight", {16, 8, 3});
  s.Add("conv.bias", {16});
  s.Add("proj.0.weight", {16, 16});
  s.Add("proj.0.bias", {16});
  s.Add("proj.2.weight", {8, 16});
  s.Add("proj.2.bias", {8});
  auto sp = AdapterChain::Create(SpeechAdapterA(2), s.views, "");
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ((*sp)->OutputRows(1500), 751);
  EXPECT_EQ((*sp)->OutputRows(1), 2);
  auto sp0 = AdapterChain::Create(SpeechAdapterA(0), s.views, "");
  ASSERT_TRUE(sp0.ok());
  EXPECT_EQ((*sp0)->OutputRows(1500), 749);
  EXPECT_EQ((*sp0)->OutputRows(2), 0);
  std::vector<float> out;
  absl::Status st = (*sp0)->Run(std::vector<float>(16, 0.5f), 2, &out, nullptr);
  EXPECT_THAT(st.message(), HasSubstr("needs at least 3 rows, got 2"));
  // Kernel in the spec must agree with the weight.
  AdapterSpec wrong = SpeechAdapterA(2);
  wrong.layers[0].kernel = 5;
  auto bad = AdapterChain::Create(wrong, s.views, "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("conv.weight has shape [16,8,3] (kernel 3)"));
}

TEST(AdapterChain, PixelShuffleNeedsASquareGrid) {
  Tensors t;
  t.Add("proj.weight", {8, 4 * 16});
  auto chain = AdapterChain::Create(PixelShuffleProjectorC(), t.views, "");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ((*chain)->input_dim(), 4);
  EXPECT_EQ((*chain)->OutputRows(576), 36);
  EXPECT_EQ((*chain)->OutputRows(575), 0);
  EXPECT_EQ((*chain)->OutputRows(36), 0);  // side 6 is not a multiple of 4
  std::vector<float> out;
  absl::Status st = (*chain)->Run(std::vector<float>(4 * 20, 1.0f), 20, &out, nullptr);
  EXPECT_THAT(st.message(), HasSubstr("square number of rows"));
  t.Add("proj.weight", {8, 4 * 16 + 1});
  EXPECT_FALSE(AdapterChain::Create(PixelShuffleProjectorC(), t.views, "").ok());
}

// The earlier speech adapter's tensors: conv [d, enc, 3] -> transformer (width d, ff) -> linear.
Tensors SpeechTransformer(int enc, int d, int ff, int c) {
  Tensors t;
  t.Add("s.conv.weight", {d, enc, 3});
  t.Add("s.conv.bias", {d});
  t.Add("s.transformer.self_attn.in_proj_weight", {3 * d, d});
  t.Add("s.transformer.self_attn.in_proj_bias", {3 * d});
  t.Add("s.transformer.self_attn.out_proj.weight", {d, d});
  t.Add("s.transformer.self_attn.out_proj.bias", {d});
  t.Add("s.transformer.linear1.weight", {ff, d});
  t.Add("s.transformer.linear1.bias", {ff});
  t.Add("s.transformer.linear2.weight", {d, ff});
  t.Add("s.transformer.linear2.bias", {d});
  for (const char* n : {"norm1", "norm2"}) {
    t.Add(std::string("s.transformer.") + n + ".weight", {d}, 1.0f);
    t.Add(std::string("s.transformer.") + n + ".bias", {d});
  }
  t.Add("s.linear.weight", {c, d});
  t.Add("s.linear.bias", {c});
  return t;
}

TEST(AdapterChain, TransformerLayerShapes) {
  Tensors t = SpeechTransformer(24, 48, 40, 16);
  auto chain = AdapterChain::Create(SpeechAdapterATransformer(8), t.views, "s.");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ((*chain)->input_dim(), 24);
  EXPECT_EQ((*chain)->output_dim(), 16);
  EXPECT_EQ((*chain)->OutputRows(1500), 749);  // Whisper's 1500 frames, conv k3 s2 no padding
  std::vector<float> out;
  ASSERT_TRUE((*chain)->Run(std::vector<float>(5 * 24, 0.25f), 5, &out, nullptr).ok());
  EXPECT_EQ(out.size(), 2u * 16);
  for (float v : out) EXPECT_TRUE(std::isfinite(v));
}

TEST(AdapterChain, TransformerHeadsMustDivideTheWidth) {
  Tensors t = SpeechTransformer(24, 48, 40, 16);
  auto chain = AdapterChain::Create(SpeechAdapterATransformer(5), t.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(),
              HasSubstr("adapter layer 1 (transformer_encoder_layer): 5 heads do not divide the "
                        "width 48 (tensor s.transformer.self_attn.in_proj_weight [144,48])"));
  // Zero heads: the spec itself is refused.
  chain = AdapterChain::Create(SpeechAdapterATransformer(0), t.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(), HasSubstr("heads must be >= 1, got 0"));
}

TEST(AdapterChain, TransformerTensorsAreChecked) {
  Tensors t = SpeechTransformer(24, 48, 40, 16);
  t.views.erase("s.transformer.norm2.bias");
  auto chain = AdapterChain::Create(SpeechAdapterATransformer(8), t.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(chain.status().message(),
              HasSubstr("tensor s.transformer.norm2.bias is missing (expected shape [48])"));

  Tensors w = SpeechTransformer(24, 48, 40, 16);
  w.Add("s.transformer.linear2.weight", {48, 39});
  chain = AdapterChain::Create(SpeechAdapterATransformer(8), w.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(),
              HasSubstr("tensor s.transformer.linear2.weight has shape [48,39], expected [48,40]"));

  Tensors q = SpeechTransformer(24, 48, 40, 16);
  q.Add("s.transformer.self_attn.in_proj_weight", {96, 48});
  chain = AdapterChain::Create(SpeechAdapterATransformer(8), q.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(),
              HasSubstr("in_proj_weight has shape [96,48], expected [3d, d] = [144,48]"));

  // The conv's width must chain into the transformer's.
  Tensors c = SpeechTransformer(24, 48, 40, 16);
  c.Add("s.conv.weight", {32, 24, 3});
  c.Add("s.conv.bias", {32});
  chain = AdapterChain::Create(SpeechAdapterATransformer(8), c.views, "s.");
  ASSERT_FALSE(chain.ok());
  EXPECT_THAT(chain.status().message(),
              HasSubstr("s.transformer.self_attn.in_proj_weight takes width 48 but the layer "
                        "before gives 32"));
}

TEST(AdapterChain, RejectsInputOfTheWrongSize) {
  Tensors t = VisionA(40, 96, 72);
  auto chain = AdapterChain::Create(VisionAdapterA(), t.views, "a.");
  ASSERT_TRUE(chain.ok());
  std::vector<float> out;
  absl::Status st = (*chain)->Run(std::vector<float>(79, 0.0f), 2, &out, nullptr);
  EXPECT_THAT(st.message(), HasSubstr("expected 2 rows x 40 = 80"));
}

// A runner standing in for a GPU's: it records its calls and writes rows that name their place.
class PatternRunner final : public AdapterRunner {
 public:
  explicit PatternRunner(int dim) : dim(dim) {}
  absl::Status Run(const float* in, int rows, int out_rows, float* out) const override {
    calls.push_back({rows, out_rows});
    first_in = in[0];
    for (int64_t i = 0; i < int64_t{out_rows} * dim; ++i) out[i] = 0.5f * i;
    return absl::OkStatus();
  }
  const int dim;
  mutable std::vector<std::pair<int, int>> calls;
  mutable float first_in = 0;
};

// With a runner, Run hands it the rows and the row count the chain gives, and returns what it
// writes; rows the chain cannot take are refused before it, naming the layer. A factory that
// declines leaves the chain on the CPU.
TEST(AdapterChain, ARunnerGetsTheRowsAndItsOutputIsTheChains) {
  Tensors t = ConvMlp(40, 3, 72, /*bias=*/false);
  auto chain = AdapterChain::Create(VisionAdapterB(true), t.views, "");
  ASSERT_TRUE(chain.ok()) << chain.status();
  const PatternRunner* runner = nullptr;
  ASSERT_TRUE(
      (*chain)
          ->UseRunner([&](const AdapterChain& c) -> absl::StatusOr<std::unique_ptr<AdapterRunner>> {
            EXPECT_EQ(c.layers().size(), 5u);
            auto r = std::make_unique<PatternRunner>(c.output_dim());
            runner = r.get();
            return std::unique_ptr<AdapterRunner>(std::move(r));
          })
          .ok());
  EXPECT_TRUE((*chain)->placed());
  std::vector<float> in(17 * 40, 0.25f), out;
  ASSERT_TRUE((*chain)->Run(in, 17, &out, nullptr).ok());
  ASSERT_EQ(runner->calls.size(), 1u);
  EXPECT_EQ(runner->calls[0], std::make_pair(17, 8));  // conv k3 s2: (17 - 3) / 2 + 1
  EXPECT_EQ(runner->first_in, 0.25f);
  ASSERT_EQ(out.size(), 8u * 72);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0.5f * i);
  const absl::Status few = (*chain)->Run(std::vector<float>(2 * 40), 2, &out, nullptr);
  EXPECT_THAT(few.message(), HasSubstr("needs at least 3 rows, got 2"));
  EXPECT_EQ(runner->calls.size(), 1u);

  auto plain = AdapterChain::Create(VisionAdapterB(true), t.views, "");
  auto declined = AdapterChain::Create(VisionAdapterB(true), t.views, "");
  ASSERT_TRUE(plain.ok() && declined.ok());
  ASSERT_TRUE(
      (*declined)
          ->UseRunner([](const AdapterChain&) -> absl::StatusOr<std::unique_ptr<AdapterRunner>> {
            return std::unique_ptr<AdapterRunner>();
          })
          .ok());
  EXPECT_FALSE((*declined)->placed());
  std::vector<float> a, b;
  ASSERT_TRUE((*plain)->Run(in, 17, &a, nullptr).ok());
  ASSERT_TRUE((*declined)->Run(in, 17, &b, nullptr).ok());
  EXPECT_EQ(a, b);
}

TEST(AdapterChain, ConcurrentRunsAgree) {
  auto ckpt = Checkpoint::Open(kDir + "vision_b_conv.safetensors");
  ASSERT_TRUE(ckpt.ok());
  auto chain = AdapterChain::Create(VisionAdapterB(true), (*ckpt)->tensors(), "proj.");
  ASSERT_TRUE(chain.ok());
  const std::vector<float> in = ReadF32(kDir + "vision_b_conv_input.bin");
  std::vector<float> ref;
  ASSERT_TRUE((*chain)->Run(in, 17, &ref, nullptr).ok());
  std::vector<std::vector<float>> outs(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      cpu::ThreadPool pool(1 + i % 2);
      for (int rep = 0; rep < 50; ++rep)
        if (!(*chain)->Run(in, 17, &outs[i], &pool).ok()) outs[i].clear();
    });
  for (auto& th : threads) th.join();
  for (const auto& o : outs) EXPECT_EQ(o, ref);
}

TEST(AdapterSpecJson, ParsesTheManifestForm) {
  auto spec = ParseAdapterSpec(std::string(
      R"([{"op":"conv1d","weights":"conv","kernel":3,"stride":2,"padding":2,"bias":true},)"
      R"({"op":"linear","weights":"proj.0"},{"op":"relu"},{"op":"linear","weights":"proj.2"},)"
      R"({"op":"gelu","approximate":"tanh"},{"op":"residual_layernorm","weights":"pre_norm"},)"
      R"({"op":"layernorm","weights":"ln","eps":1e-6},{"op":"pixel_shuffle","factor":2}])"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->layers.size(), 8u);
  EXPECT_EQ(spec->layers[0].op, AdapterOp::kConv1d);
  EXPECT_EQ(spec->layers[0].padding, 2);
  EXPECT_TRUE(spec->layers[1].bias);
  EXPECT_TRUE(spec->layers[4].gelu_tanh);
  EXPECT_FLOAT_EQ(spec->layers[6].eps, 1e-6f);
  EXPECT_EQ(spec->layers[7].factor, 2);
  // Round trip.
  auto again = ParseAdapterSpec(AdapterSpecToJson(*spec));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(AdapterSpecToJson(*again), AdapterSpecToJson(*spec));
}

TEST(AdapterSpecJson, ErrorsNameTheLayer) {
  auto e = ParseAdapterSpec(std::string(R"([{"op":"linear","weights":"a"},{"op":"swish"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("adapter layer 1: unknown op \"swish\""));
  e = ParseAdapterSpec(std::string(R"([{"op":"linear"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("needs a \"weights\" tensor stem"));
  e = ParseAdapterSpec(std::string(R"([{"op":"linear","weights":"a","kernel":3}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("unknown key \"kernel\""));
  e = ParseAdapterSpec(std::string(R"([{"op":"relu"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("no layer with weights"));
  e = ParseAdapterSpec(std::string(R"([{"op":"gelu","approximate":"fast"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("\"tanh\" or \"none\""));
  e = ParseAdapterSpec(std::string("{"));
  EXPECT_THAT(e.status().message(), HasSubstr("not valid JSON"));
  e = ParseAdapterSpec(std::string(R"([{"op":"conv1d","weights":"c","stride":0}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("stride 0"));
}

TEST(AdapterSpecJson, TransformerLayer) {
  auto spec = ParseAdapterSpec(
      std::string(R"([{"op":"transformer_encoder_layer","weights":"transformer","heads":8,)"
                  R"("activation":"gelu","norm_first":true,"eps":1e-6}])"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  const AdapterLayerSpec& l = spec->layers[0];
  EXPECT_EQ(l.op, AdapterOp::kTransformerEncoderLayer);
  EXPECT_EQ(l.heads, 8);
  EXPECT_TRUE(l.ffn_gelu);
  EXPECT_TRUE(l.norm_first);
  EXPECT_FLOAT_EQ(l.eps, 1e-6f);
  auto again = ParseAdapterSpec(AdapterSpecToJson(*spec));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(AdapterSpecToJson(*again), AdapterSpecToJson(*spec));
  // torch's defaults.
  spec = ParseAdapterSpec(
      std::string(R"([{"op":"transformer_encoder_layer","weights":"t","heads":2}])"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->layers[0].ffn_gelu);
  EXPECT_FALSE(spec->layers[0].norm_first);
  EXPECT_FLOAT_EQ(spec->layers[0].eps, 1e-5f);

  auto e = ParseAdapterSpec(std::string(R"([{"op":"transformer_encoder_layer","weights":"t"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("\"heads\" is required"));
  e = ParseAdapterSpec(
      std::string(R"([{"op":"transformer_encoder_layer","weights":"t","heads":"8"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("\"heads\" must be an integer"));
  e = ParseAdapterSpec(std::string(
      R"([{"op":"transformer_encoder_layer","weights":"t","heads":8,"activation":"swish"}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("\"relu\" or \"gelu\""));
  e = ParseAdapterSpec(std::string(
      R"([{"op":"transformer_encoder_layer","weights":"t","heads":8,"norm_first":1}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("\"norm_first\" must be a boolean"));
  e = ParseAdapterSpec(
      std::string(R"([{"op":"transformer_encoder_layer","weights":"t","heads":8,"kernel":3}])"));
  EXPECT_THAT(e.status().message(), HasSubstr("unknown key \"kernel\""));
}

}  // namespace
}  // namespace modrwkv::encoders

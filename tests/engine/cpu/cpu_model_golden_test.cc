// The CPU backend against the official `rwkv` package (RWKV_x070, strategy "cpu fp32"):
// fixtures made by tools/golden/gen_rwkv7_golden.py on seeded random weights
// (docs/random-weights.md) and on real .pth / .safetensors files.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_model.h"
#include "engine/loader/initial_state_loader.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/f16_state.h"

namespace modrwkv::cpu {
namespace {

using nlohmann::json;

// Logits within this fraction of the reference logits' standard deviation (issue contract).
constexpr double kLogitTol = 1e-4;

std::string GoldenDir(const std::string& name) {
  return std::string(MODRWKV_GOLDEN_DIR) + "/rwkv7/" + name;
}

json ReadJson(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing fixture " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return json::parse(ss.str());
}

std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing fixture " << path;
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), {});
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

double Std(const std::vector<float>& v) {
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= v.size();
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / v.size());
}

double MaxAbsDiff(absl::Span<const float> a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

struct Case {
  std::string fixture;
  std::string source;       // "random", "pth", "safetensors"
  std::vector<int> chunks;  // prefill chunk sizes (empty: whole prompt in one step)
};

std::string CaseName(const testing::TestParamInfo<Case>& info) {
  std::string n = info.param.fixture + "_" + info.param.source;
  std::replace(n.begin(), n.end(), '/', '_');
  for (int c : info.param.chunks) n += "_c" + std::to_string(c);
  return n;
}

class GoldenTest : public testing::TestWithParam<Case> {};

TEST_P(GoldenTest, LogitsAndStateMatchOfficialPackage) {
  const Case& c = GetParam();
  const std::string dir = GoldenDir(c.fixture);
  const json m = ReadJson(dir + "/manifest.json");
  const json& cfg = m["config"];

  std::vector<OwnedTensor> owned;
  std::unique_ptr<Checkpoint> ckpt;
  std::map<std::string, TensorView> views;
  if (c.source == "random") {
    RandomModelSpec spec;
    spec.n_layer = cfg["n_layer"];
    spec.n_embd = cfg["n_embd"];
    spec.vocab_size = cfg["vocab_size"];
    spec.seed = cfg["seed"];
    spec.dtype = cfg["dtype"] == "bf16" ? DType::kBF16 : DType::kF32;
    owned = MakeRandomRwkv7(spec).value();
    views = ViewsOf(owned);
  } else {
    auto opened = Checkpoint::Open(dir + "/" + m["model_files"][c.source].get<std::string>());
    ASSERT_TRUE(opened.ok()) << opened.status();
    ckpt = std::move(opened).value();
    views = ckpt->tensors();
  }
  ModelOptions opts;
  opts.num_slots = 1;
  opts.weight_type = ModelOptions::WeightType::kAuto;  // bf16 fixtures keep bf16 weights
  auto model = CpuModel::Create(views, opts);
  ASSERT_TRUE(model.ok()) << model.status();
  CpuModel& mdl = **model;
  EXPECT_EQ(mdl.info().weight_dtype, cfg["dtype"] == "bf16" ? "bf16" : "f32");
  EXPECT_EQ(mdl.config().n_layer, cfg["n_layer"].get<int>());
  EXPECT_EQ(mdl.config().vocab_size, cfg["vocab_size"].get<int>());

  // A fixture with an "initial_state" starts from that state-tuning file instead of zeros
  // (tools/golden/gen_initial_state_fixtures.py).
  if (m.contains("initial_state")) {
    auto initial = LoadInitialState(
        "fixture", dir + "/" + m["initial_state"]["file"].get<std::string>(), mdl.config());
    ASSERT_TRUE(initial.ok()) << initial.status();
    ASSERT_TRUE(mdl.WriteSlot(0, initial->state).ok());
  }

  const std::vector<int32_t> prompt = m["prompt"].get<std::vector<int32_t>>();
  const std::vector<int32_t> decode = m["decode"].get<std::vector<int32_t>>();
  std::vector<StepResult> res;
  auto step = [&](absl::Span<const int32_t> toks, bool logits) {
    StepEntry e;
    e.slot = 0;
    e.inputs = {InputRowsView::Tokens(toks)};
    e.output = logits ? StepOutput::kLogits : StepOutput::kNone;
    ASSERT_TRUE(mdl.Step({e}, &res).ok());
  };
  // Prefill (whole or in the given chunks), then decode token by token.
  std::vector<int> chunks = c.chunks;
  if (chunks.empty()) chunks = {static_cast<int>(prompt.size())};
  size_t pos = 0;
  for (size_t i = 0; pos < prompt.size(); ++i) {
    const size_t n =
        std::min<size_t>(i < chunks.size() ? chunks[i] : chunks.back(), prompt.size() - pos);
    step(absl::MakeConstSpan(prompt).subspan(pos, n), pos + n == prompt.size());
    pos += n;
  }
  size_t checked = 0;
  for (const json& l : m["logits"]) {
    const size_t consumed = l["tokens_consumed"];
    while (prompt.size() + checked < consumed) {
      step(absl::MakeConstSpan(decode).subspan(checked, 1), true);
      ++checked;
    }
    const std::vector<float> ref = ReadFloats(dir + "/" + l["file"].get<std::string>());
    ASSERT_EQ(res[0].logits.size(), ref.size());
    const double rel = MaxAbsDiff(res[0].logits, ref) / Std(ref);
    EXPECT_LT(rel, kLogitTol) << "after " << consumed << " tokens";
    // Same greedy choice.
    const auto ours = std::max_element(res[0].logits.begin(), res[0].logits.end());
    EXPECT_EQ(ours - res[0].logits.begin(), l["argmax"].get<int>());
  }

  // Final state (after all prompt + decode tokens).
  const ModelConfig& mc = mdl.config();
  std::vector<float> state(mc.StateFloats());
  ASSERT_TRUE(mdl.ReadSlot(0, absl::MakeSpan(state)).ok());
  const int64_t C = mc.n_embd, W = static_cast<int64_t>(mc.n_head) * 64 * 64;
  const int64_t per_layer = mc.StateFloatsPerLayer();
  const int64_t part_off[3] = {0, C, C + W}, part_len[3] = {C, W, C};
  const char* part_name[3] = {"att_shift", "wkv", "ffn_shift"};
  if (m["state"]["layout"] == "full") {
    const std::vector<float> ref = ReadFloats(dir + "/" + m["state"]["file"].get<std::string>());
    ASSERT_EQ(ref.size(), state.size());
    for (int li = 0; li < mc.n_layer; ++li) {
      for (int p = 0; p < 3; ++p) {
        const int64_t o = li * per_layer + part_off[p];
        double rms = 0, d = 0;
        for (int64_t i = 0; i < part_len[p]; ++i) {
          rms += double(ref[o + i]) * ref[o + i];
          d = std::max(d, std::abs(double(state[o + i]) - ref[o + i]));
        }
        rms = std::sqrt(rms / part_len[p]);
        EXPECT_LT(d / rms, 1e-4) << "layer " << li << " " << part_name[p];
      }
    }
  } else {
    const json& summary = m["state_summary"];
    ASSERT_EQ(summary.size(), static_cast<size_t>(mc.n_layer));
    for (int li = 0; li < mc.n_layer; ++li) {
      for (int p = 0; p < 3; ++p) {
        const json& ref = summary[li][part_name[p]];
        const int64_t o = li * per_layer + part_off[p];
        double sum = 0, sumsq = 0;
        for (int64_t i = 0; i < part_len[p]; ++i) {
          sum += state[o + i];
          sumsq += double(state[o + i]) * state[o + i];
        }
        const double rms = std::sqrt(ref["sumsq"].get<double>() / part_len[p]);
        EXPECT_NEAR(sumsq, ref["sumsq"].get<double>(), 1e-4 * ref["sumsq"].get<double>())
            << "layer " << li << " " << part_name[p];
        EXPECT_NEAR(sum, ref["sum"].get<double>(), 1e-4 * rms * part_len[p])
            << "layer " << li << " " << part_name[p];
        const std::vector<float> head = ref["head"].get<std::vector<float>>();
        for (size_t i = 0; i < head.size(); ++i) {
          EXPECT_NEAR(state[o + i], head[i], 1e-4 * rms) << "layer " << li << " " << part_name[p];
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Official, GoldenTest,
    testing::Values(Case{"micro", "pth", {}}, Case{"micro", "safetensors", {}},
                    Case{"micro", "pth", {5, 1, 9}}, Case{"tiny_f32", "random", {}},
                    Case{"tiny_f32", "random", {1}}, Case{"tiny_bf16", "random", {}},
                    Case{"tiny_bf16", "random", {3, 13}}, Case{"m01b_f32", "random", {}},
                    Case{"m01b_f32", "random", {7, 1, 24}}, Case{"m01b_bf16", "random", {}},
                    Case{"initial_state/micro", "random", {}},
                    Case{"initial_state/micro", "random", {5, 1, 9}},
                    Case{"initial_state/tiny_f32", "random", {}},
                    Case{"initial_state/tiny_f32", "random", {1}}),
    CaseName);

// The C++ generator equals the Python one (tools/golden/random_weights.py): its self-check
// values are recorded in tools/golden/README.md.
TEST(RandomWeights, MatchPythonGenerator) {
  RandomModelSpec spec;
  spec.n_layer = 2;
  spec.n_embd = 128;
  spec.vocab_size = 1024;
  spec.seed = 1;
  auto t = MakeRandomRwkv7(spec).value();
  const auto views = ViewsOf(t);
  const float* emb = static_cast<const float*>(views.at("emb.weight").data);
  const float* w1 = static_cast<const float*>(views.at("blocks.0.att.w1").data);
  const float emb_ref[4] = {-0.7456610202789307f, 0.5299397706985474f, -0.7913491725921631f,
                            0.9690886735916138f};
  const float w1_ref[4] = {-0.05913975089788437f, 0.018289214000105858f, 0.07790575176477432f,
                           -0.055897172540426254f};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(emb[i], emb_ref[i]);
    EXPECT_EQ(w1[i], w1_ref[i]);
  }
  EXPECT_EQ(Fnv1a64("emb.weight"), 0xfae6044c1709db6full);
  double sum = 0;
  for (const OwnedTensor& x : t) {
    const float* p = reinterpret_cast<const float*>(x.bytes.data());
    for (size_t i = 0; i < x.bytes.size() / 4; ++i) sum += p[i];
  }
  EXPECT_NEAR(sum, 2245.1024993890387, 1e-6);
}

}  // namespace
}  // namespace modrwkv::cpu

namespace modrwkv::cpu {
namespace {

// The accuracy cost of quantised weights, measured against the official package's f32 logits on
// the 0.1B-shape weights (docs/benchmarks.md quotes the printed figures): the largest and the
// mean |difference| in standard deviations of the official logits, below `max_std` and
// `mean_std`, and the same greedy token.
void ExpectCloseToOfficialF32(ModelOptions::WeightType type, const char* name, double max_std,
                              double mean_std) {
  const std::string dir = GoldenDir("m01b_f32");
  const json m = ReadJson(dir + "/manifest.json");
  RandomModelSpec spec;
  spec.n_layer = m["config"]["n_layer"];
  spec.n_embd = m["config"]["n_embd"];
  spec.vocab_size = m["config"]["vocab_size"];
  spec.seed = m["config"]["seed"];
  auto owned = MakeRandomRwkv7(spec).value();
  ModelOptions opts;
  opts.weight_type = type;
  auto model = CpuModel::Create(ViewsOf(owned), opts).value();
  std::vector<int32_t> toks = m["prompt"].get<std::vector<int32_t>>();
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(toks)};
  e.output = StepOutput::kLogits;
  std::vector<StepResult> res;
  ASSERT_TRUE(model->Step({e}, &res).ok());
  const json& l = m["logits"][0];
  const std::vector<float> ref = ReadFloats(dir + "/" + l["file"].get<std::string>());
  const double rel = MaxAbsDiff(res[0].logits, ref) / Std(ref);
  double mean_abs = 0;
  for (size_t i = 0; i < ref.size(); ++i) mean_abs += std::abs(double(res[0].logits[i]) - ref[i]);
  mean_abs /= ref.size();
  std::printf(
      "%s vs official f32 (0.1B shape, 32 tokens): max |diff| = %.4f std, mean |diff| = "
      "%.4f std\n",
      name, rel, mean_abs / Std(ref));
  EXPECT_LT(rel, max_std);
  EXPECT_LT(mean_abs / Std(ref), mean_std);
  const auto ours = std::max_element(res[0].logits.begin(), res[0].logits.end());
  EXPECT_EQ(ours - res[0].logits.begin(), l["argmax"].get<int>());
}

TEST(Int8Accuracy, StaysCloseToOfficialF32Logits) {
  ExpectCloseToOfficialF32(ModelOptions::WeightType::kI8, "int8", 0.1, 0.01);
}

// int4: the large projections in 4 bits (ModelOptions::WeightType::kI4). About 13x int8's
// differences, as 16x coarser steps make (the weights here are random: no outliers, no
// structure); the trained demos' answers in int4 are checked through the server.
TEST(Int4Accuracy, StaysCloseToOfficialF32Logits) {
  ExpectCloseToOfficialF32(ModelOptions::WeightType::kI4, "int4", 0.6, 0.12);
}

// The accuracy cost of f16 states (the CUDA backend's ModelOptions::StateType::kF16), measured on
// the 0.1B-shape weights by emulating the pool's rounding (tests/engine/f16_state.h): two slots
// decode the same tokens one per step, one of them rounded to f16 after every step, for the
// prompt's 32 tokens and then 96 tokens greedy from the f32 slot (both fed the same ones).
// docs/benchmarks.md quotes the printed figures.
TEST(F16StateAccuracy, StaysCloseToF32States) {
  const json m = ReadJson(GoldenDir("m01b_f32") + "/manifest.json");
  RandomModelSpec spec;
  spec.n_layer = m["config"]["n_layer"];
  spec.n_embd = m["config"]["n_embd"];
  spec.vocab_size = m["config"]["vocab_size"];
  spec.seed = m["config"]["seed"];
  auto owned = MakeRandomRwkv7(spec).value();
  ModelOptions opts;
  opts.num_slots = 2;
  auto model = CpuModel::Create(ViewsOf(owned), opts).value();
  const std::vector<int32_t> prompt = m["prompt"].get<std::vector<int32_t>>();
  int32_t token = prompt[0];
  double worst = 0, sum_mean = 0, last = 0;
  int agree = 0, steps = 0;
  constexpr int kGenerated = 96;
  for (size_t i = 0; i < prompt.size() + kGenerated; ++i) {
    std::vector<StepEntry> entries(2);
    for (int s = 0; s < 2; ++s) {
      entries[s].slot = s;
      entries[s].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&token, 1))};
      entries[s].output = StepOutput::kLogits;
    }
    std::vector<StepResult> res;
    ASSERT_TRUE(model->Step(entries, &res).ok());
    ASSERT_TRUE(RoundSlotToF16(*model, 1).ok());
    const std::vector<float> ref(res[0].logits.begin(), res[0].logits.end());
    const double sd = Std(ref);
    double mean = 0;
    for (size_t v = 0; v < ref.size(); ++v) mean += std::abs(double(res[1].logits[v]) - ref[v]);
    last = MaxAbsDiff(res[1].logits, ref) / sd;
    worst = std::max(worst, last);
    sum_mean += mean / ref.size() / sd;
    const auto top = [](absl::Span<const float> l) {
      return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    };
    const int32_t next = top(res[0].logits);
    agree += next == top(res[1].logits);
    ++steps;
    token = i + 1 < prompt.size() ? prompt[i + 1] : next;
  }
  std::printf(
      "f16 vs f32 states (0.1B shape, %d decode steps, rounded once per step): max |diff| = "
      "%.4f std (last step %.4f), mean |diff| = %.5f std, argmax equal %d/%d\n",
      steps, worst, last, sum_mean / steps, agree, steps);
  EXPECT_GT(worst, 0.0);   // the rounding happened
  EXPECT_LT(worst, 0.01);  // measured 0.0018: a fifth of the bound
  EXPECT_GE(agree, steps - 2);
}

}  // namespace
}  // namespace modrwkv::cpu

// The GPU backend and the CPU backend side by side through a long seeded run of random work, as
// a scheduler hands it to a backend over time: steps of any mix (decode tokens, prompt chunks of
// any length, embedding rows; logits, hidden rows, nothing, or a greedy token picked on the
// device), decode steps of every batch bucket again and again (eager, captured, replayed), and
// between them every slot operation (copy, reset, offload into a cold state, restore of any cold
// state into any slot with the cold state dropped at once or kept, export from one backend and
// import into the other). After every step each output agrees with the CPU's within the backends'
// bound; every few operations, and at the end, every slot does. The hand-written cases of
// cuda_model_check.cc check each path once; this checks them in the orders the serving layer
// produces. Built into `cuda_model_test` (named *_check.cc: see wkv_cuda_check.cc). Without a GPU
// the device cases skip.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/model/cold_state.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/model_test_util.h"
#include "tests/engine/f16_state.h"

namespace modrwkv::cuda {
namespace {

using testing_util::HaveDevice;
using testing_util::RelErr;
using testing_util::SmallSpec;

constexpr int kSlots = 6;
constexpr int kVocab = 1024;  // SmallSpec's

struct RunConfig {
  std::string name;
  DType dtype;  // of the random weights; both backends keep them so
  ModelOptions::WeightType weights;
  // f16 state slots on the GPU (ModelOptions::StateType::kF16); the CPU, which keeps f32 slots,
  // rounds each stepped slot to f16 after the step, as the GPU's kernels store it
  // (tests/engine/f16_state.h).
  bool f16_states;
  // The backends' bound on logits and hidden rows (docs/engine.md, "What the GPU promises"):
  // f32 weights 1e-3 of the logits' standard deviation; bf16 weights 1.5e-2 (from 16 rows a
  // step's activations are rounded to bf16 for the tensor cores, and that difference stays in
  // the state).
  double tol;
  // The bound on slot states, element by element against the state's own standard deviation:
  // with f32 weights and states the same as the logits'. The largest elements move further than
  // the logits they lead to where something is rounded: bf16 activations (up to 1.8e-2 in the
  // bf16 run below, its logits within 4.8e-3), or an f16 state element rounded the other way (one
  // f16 step, 2^-10 of it, carried on by the steps after; up to 7.5e-3, the logits within 1.9e-4).
  double state_tol;
  uint64_t seed;
  int operations;
};

// One side's cold state of the same slot at the same moment, on both backends.
struct ColdPair {
  std::unique_ptr<ColdState> cpu, gpu;
};

class RandomWork {
 public:
  RandomWork(const RunConfig& config, Model& cpu, Model& gpu)
      : config_(config), cpu_(cpu), gpu_(gpu), rng_(config.seed) {
    SamplerConfig greedy;
    greedy.temperature = 0;
    for (int s = 0; s < kSlots; ++s) {
      cpu_samplers_.push_back(Sampler::Create(greedy, kVocab).value());
      gpu_samplers_.push_back(Sampler::Create(greedy, kVocab).value());
    }
  }

  void Run() {
    for (op_ = 0; op_ < config_.operations && !::testing::Test::HasFatalFailure(); ++op_) {
      const int pick = Uniform(0, 99);
      if (pick < 40) {
        MixedStep();
      } else if (pick < 65) {
        DecodeStep();
      } else if (pick < 72) {
        Copy();
      } else if (pick < 77) {
        Reset();
      } else if (pick < 85) {
        Offload();
      } else if (pick < 93) {
        Restore();
      } else {
        ExportImport();
      }
      if (op_ % 8 == 7) ExpectSameSlots();
    }
    ExpectSameSlots();
    ::testing::Test::RecordProperty("worst_logit_error", absl::StrCat(worst_));
    ::testing::Test::RecordProperty("worst_state_error", absl::StrCat(worst_state_));
    ::testing::Test::RecordProperty("steps", absl::StrCat(steps_));
    ::testing::Test::RecordProperty("greedy_tokens_compared", absl::StrCat(tokens_compared_));
  }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // k distinct slots in random order.
  std::vector<int> Slots(int k) {
    std::vector<int> all(kSlots);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng_);
    all.resize(k);
    return all;
  }

  std::vector<int32_t>& Tokens(int n) {
    inputs_tokens_.emplace_back(n);
    for (int32_t& t : inputs_tokens_.back()) t = Uniform(0, kVocab - 1);
    return inputs_tokens_.back();
  }

  std::vector<float>& Rows(int n) {
    const int c = cpu_.config().n_embd;
    inputs_rows_.emplace_back(static_cast<size_t>(n) * c);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    for (float& v : inputs_rows_.back()) v = normal(rng_);
    return inputs_rows_.back();
  }

  StepOutput AnyOutput(bool hidden_allowed) {
    const int pick = Uniform(0, 99);
    if (pick < 45) return StepOutput::kLogits;
    if (pick < 65) return StepOutput::kNone;
    if (pick < 85 || !hidden_allowed) return StepOutput::kSample;
    return StepOutput::kHidden;
  }

  // Sequences of every kind in one step: decode tokens, prompt chunks from 2 to 40 tokens (long
  // enough, alone, for the chunked recurrence), embedding rows with or without tokens after them.
  void MixedStep() {
    std::vector<StepEntry> entries;
    for (int slot : Slots(Uniform(1, kSlots))) {
      StepEntry e;
      e.slot = slot;
      const int kind = Uniform(0, 99);
      if (kind < 40) {
        e.inputs = {InputRowsView::Tokens(Tokens(1))};
      } else if (kind < 80) {
        e.inputs = {InputRowsView::Tokens(Tokens(Uniform(2, 40)))};
      } else {
        e.inputs = {InputRowsView::Embeddings(Rows(Uniform(1, 6)))};
        if (Uniform(0, 1) == 1) e.inputs.push_back(InputRowsView::Tokens(Tokens(Uniform(1, 5))));
      }
      e.output = AnyOutput(/*hidden_allowed=*/true);
      entries.push_back(std::move(e));
    }
    StepBoth(std::move(entries));
  }

  // One token for each of 1 to 6 sequences, no hidden rows: a decode step, padded to its bucket
  // (1, 2, 4, 8) and run eagerly, captured or replayed from the bucket's graph.
  void DecodeStep() {
    std::vector<StepEntry> entries;
    for (int slot : Slots(Uniform(1, kSlots))) {
      StepEntry e;
      e.slot = slot;
      e.inputs = {InputRowsView::Tokens(Tokens(1))};
      e.output = AnyOutput(/*hidden_allowed=*/false);
      entries.push_back(std::move(e));
    }
    StepBoth(std::move(entries));
  }

  void StepBoth(std::vector<StepEntry> entries) {
    ++steps_;
    std::vector<StepEntry> cpu_entries = entries;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].output != StepOutput::kSample) continue;
      cpu_entries[i].sampler = cpu_samplers_[entries[i].slot].get();
      entries[i].sampler = gpu_samplers_[entries[i].slot].get();
    }
    std::vector<StepResult> c, g;
    const absl::Status cs = cpu_.Step(cpu_entries, &c);
    ASSERT_TRUE(cs.ok()) << Where() << cs;
    const absl::Status gs = gpu_.Step(entries, &g);
    ASSERT_TRUE(gs.ok()) << Where() << gs;
    if (config_.f16_states) {
      for (const StepEntry& e : entries) ASSERT_TRUE(RoundSlotToF16(cpu_, e.slot).ok()) << Where();
    }
    ASSERT_EQ(c.size(), entries.size());
    ASSERT_EQ(g.size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string what = absl::StrCat(Where(), "entry ", i, " (slot ", entries[i].slot, ")");
      switch (entries[i].output) {
        case StepOutput::kLogits:
          ASSERT_EQ(g[i].logits.size(), static_cast<size_t>(kVocab)) << what;
          ExpectClose(c[i].logits, g[i].logits, what);
          break;
        case StepOutput::kHidden:
          ASSERT_EQ(g[i].hidden.size(), c[i].hidden.size()) << what;
          ExpectClose(c[i].hidden, g[i].hidden, what);
          break;
        case StepOutput::kSample:
          ExpectSameGreedyToken(c[i], g[i], what);
          break;
        case StepOutput::kNone:
          EXPECT_TRUE(g[i].logits.empty() && g[i].hidden.empty()) << what;
          break;
      }
    }
    inputs_tokens_.clear();
    inputs_rows_.clear();
  }

  void ExpectClose(absl::Span<const float> cpu, absl::Span<const float> gpu,
                   const std::string& what) {
    const double err = RelErr(cpu, gpu);
    worst_ = std::max(worst_, err);
    EXPECT_LT(err, config_.tol) << what;
  }

  void ExpectCloseStates(absl::Span<const float> cpu, absl::Span<const float> gpu, int slot) {
    const double err = RelErr(cpu, gpu);
    worst_state_ = std::max(worst_state_, err);
    EXPECT_LT(err, config_.state_tol) << Where() << "slot " << slot;
  }

  // The device's greedy token is the CPU's wherever the CPU's best two logits are further apart
  // than the backends' difference can bridge (both within tol of the logits' standard deviation).
  void ExpectSameGreedyToken(const StepResult& c, const StepResult& g, const std::string& what) {
    ASSERT_EQ(c.logits.size(), static_cast<size_t>(kVocab)) << what;
    ASSERT_GE(g.token, 0) << what;
    ASSERT_LT(g.token, kVocab) << what;
    std::vector<float> sorted(c.logits.begin(), c.logits.end());
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    double mean = 0, var = 0;
    for (float v : c.logits) mean += v;
    mean /= kVocab;
    for (float v : c.logits) var += (v - mean) * (v - mean);
    const double sd = std::sqrt(var / kVocab);
    if (sorted[0] - sorted[1] <= 4 * config_.tol * sd) return;  // too close to call
    ++tokens_compared_;
    EXPECT_EQ(g.token, c.token) << what;
  }

  void Copy() {
    const std::vector<int> s = Slots(2);
    ASSERT_TRUE(cpu_.CopySlot(s[0], s[1]).ok()) << Where();
    const absl::Status st = gpu_.CopySlot(s[0], s[1]);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  void Reset() {
    const int slot = Uniform(0, kSlots - 1);
    ASSERT_TRUE(cpu_.ResetSlot(slot).ok()) << Where();
    const absl::Status st = gpu_.ResetSlot(slot);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  // A slot's state into the cold tier; the slot itself is left as it is, to be stepped on,
  // reset or overwritten by what follows. At most 4 cold states are kept: a fifth drops the
  // oldest (its pinned buffer back to the spares, perhaps with its copy still queued).
  void Offload() {
    const int slot = Uniform(0, kSlots - 1);
    auto c = cpu_.OffloadSlot(slot);
    ASSERT_TRUE(c.ok()) << Where() << c.status();
    auto g = gpu_.OffloadSlot(slot);
    ASSERT_TRUE(g.ok()) << Where() << g.status();
    cold_.push_back({std::move(*c), std::move(*g)});
    if (cold_.size() > 4) cold_.erase(cold_.begin());
  }

  // A cold state into any slot; then, half the time, dropped at once (its restore may still be
  // queued behind the slot's earlier work).
  void Restore() {
    if (cold_.empty()) return Offload();
    const size_t i = Uniform(0, static_cast<int>(cold_.size()) - 1);
    const int slot = Uniform(0, kSlots - 1);
    ASSERT_TRUE(cpu_.RestoreSlot(slot, *cold_[i].cpu).ok()) << Where();
    const absl::Status st = gpu_.RestoreSlot(slot, *cold_[i].gpu);
    ASSERT_TRUE(st.ok()) << Where() << st;
    if (Uniform(0, 1) == 1) cold_.erase(cold_.begin() + i);
  }

  // A session moved between backends: each backend's export of a slot imported into the other
  // backend's slot (another one, or the same), so the GPU continues from the CPU's state and
  // the other way round.
  void ExportImport() {
    const int from = Uniform(0, kSlots - 1), to = Uniform(0, kSlots - 1);
    const int64_t n = cpu_.config().StateFloats();
    std::vector<float> c(n), g(n);
    ASSERT_TRUE(cpu_.ReadSlot(from, absl::MakeSpan(c)).ok()) << Where();
    ASSERT_TRUE(gpu_.ReadSlot(from, absl::MakeSpan(g)).ok()) << Where();
    ExpectCloseStates(c, g, from);
    ASSERT_TRUE(cpu_.WriteSlot(to, g).ok()) << Where();
    const absl::Status st = gpu_.WriteSlot(to, c);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  void ExpectSameSlots() {
    const int64_t n = cpu_.config().StateFloats();
    std::vector<float> c(n), g(n);
    for (int slot = 0; slot < kSlots; ++slot) {
      ASSERT_TRUE(cpu_.ReadSlot(slot, absl::MakeSpan(c)).ok()) << Where();
      const absl::Status st = gpu_.ReadSlot(slot, absl::MakeSpan(g));
      ASSERT_TRUE(st.ok()) << Where() << st;
      ExpectCloseStates(c, g, slot);
    }
  }

  std::string Where() const { return absl::StrCat(config_.name, ", operation ", op_, ": "); }

  const RunConfig& config_;
  Model& cpu_;
  Model& gpu_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Sampler>> cpu_samplers_, gpu_samplers_;
  std::vector<std::vector<int32_t>> inputs_tokens_;  // a step's inputs, alive until it returns
  std::vector<std::vector<float>> inputs_rows_;
  std::vector<ColdPair> cold_;
  int op_ = 0, steps_ = 0, tokens_compared_ = 0;
  double worst_ = 0, worst_state_ = 0;
};

class CudaRandomWorkTest : public ::testing::TestWithParam<RunConfig> {};

TEST_P(CudaRandomWorkTest, EveryOutputAndSlotFollowsTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RunConfig& config = GetParam();
  auto tensors = MakeRandomRwkv7(SmallSpec(config.seed, config.dtype));
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ModelOptions o;
  o.num_slots = kSlots;
  o.threads = 1;
  o.weight_type = config.weights;
  auto cpu = cpu::CpuModel::Create(ViewsOf(*tensors), o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  if (config.f16_states) o.state_type = ModelOptions::StateType::kF16;
  auto gpu = CudaModel::Create(ViewsOf(*tensors), o, 0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  RandomWork(config, **cpu, **gpu).Run();
}

INSTANTIATE_TEST_SUITE_P(
    Weights, CudaRandomWorkTest,
    ::testing::Values(RunConfig{"f32", DType::kF32, ModelOptions::WeightType::kF32, false, 1e-3,
                                1e-3, 101, 64},
                      RunConfig{"bf16", DType::kBF16, ModelOptions::WeightType::kBF16, false,
                                1.5e-2, 3e-2, 202, 64},
                      RunConfig{"f32_f16_states", DType::kF32, ModelOptions::WeightType::kF32, true,
                                1e-3, 1e-2, 303, 48}),
    [](const ::testing::TestParamInfo<RunConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace modrwkv::cuda

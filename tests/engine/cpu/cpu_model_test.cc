// Invariants of the CPU backend that need no reference: batching, chunking, embeddings input and
// slot operations must not change results; bad steps are refused.
#include "engine/cpu/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/checkpoint/random_weights.h"
#include "gtest/gtest.h"
#include "tests/engine/random_work.h"

namespace modrwkv::cpu {
namespace {

class CpuModelTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    RandomModelSpec spec;
    spec.n_layer = 3;
    spec.n_embd = 128;
    spec.vocab_size = 1000;
    spec.seed = 42;
    tensors_ = new std::vector<OwnedTensor>(MakeRandomRwkv7(spec).value());
  }
  static void TearDownTestSuite() { delete tensors_; }

  std::unique_ptr<CpuModel> Make(int slots,
                                 ModelOptions::WeightType wt = ModelOptions::WeightType::kF32,
                                 int threads = 2) {
    ModelOptions o;
    o.num_slots = slots;
    o.weight_type = wt;
    o.threads = threads;
    auto m = CpuModel::Create(ViewsOf(*tensors_), o);
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(m).value();
  }

  static std::vector<float> Logits(Model& m, int slot, const std::vector<int32_t>& toks) {
    StepEntry e;
    e.slot = slot;
    e.inputs = {InputRowsView::Tokens(toks)};
    e.output = StepOutput::kLogits;
    std::vector<StepResult> res;
    EXPECT_TRUE(m.Step({e}, &res).ok());
    return {res[0].logits.begin(), res[0].logits.end()};
  }

  static float MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
    double mean = 0, var = 0;
    for (float x : b) mean += x;
    mean /= b.size();
    for (float x : b) var += (x - mean) * (x - mean);
    const double sd = std::sqrt(var / b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]) / sd);
    return static_cast<float>(m);
  }

  static std::vector<OwnedTensor>* tensors_;
  const std::vector<int32_t> prompt_ = {5, 17, 999, 3, 250, 250, 1, 0, 42, 7, 100, 600};
};
std::vector<OwnedTensor>* CpuModelTest::tensors_ = nullptr;

TEST_F(CpuModelTest, ReportsShapesFromTensors) {
  auto m = Make(1);
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.n_layer, 3);
  EXPECT_EQ(c.n_embd, 128);
  EXPECT_EQ(c.n_head, 2);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.ffn_size, 512);
  EXPECT_EQ(c.d_decay, LoraRanksFor(128).w);
  EXPECT_EQ(m->StateBytes(), 3LL * 128 * 66 * 4);
}

TEST_F(CpuModelTest, PrefillEqualsTokenByTokenAndChunks) {
  auto m = Make(3);
  std::vector<float> whole = Logits(*m, 0, prompt_);
  std::vector<float> one;
  for (int32_t t : prompt_) one = Logits(*m, 1, {t});
  EXPECT_LT(MaxRelDiff(one, whole), 1e-4f);
  // Chunks of 5, 1, 6.
  Logits(*m, 2, {prompt_.begin(), prompt_.begin() + 5});
  Logits(*m, 2, {prompt_[5]});
  std::vector<float> chunked = Logits(*m, 2, {prompt_.begin() + 6, prompt_.end()});
  EXPECT_LT(MaxRelDiff(chunked, whole), 1e-4f);
  // States agree too.
  std::vector<float> s0(m->config().StateFloats()), s2(s0.size());
  ASSERT_TRUE(m->ReadSlot(0, absl::MakeSpan(s0)).ok());
  ASSERT_TRUE(m->ReadSlot(2, absl::MakeSpan(s2)).ok());
  for (size_t i = 0; i < s0.size(); ++i) ASSERT_NEAR(s0[i], s2[i], 1e-4f * (1 + std::abs(s0[i])));
}

TEST_F(CpuModelTest, BatchingDoesNotChangeResults) {
  auto m = Make(4);
  // Alone.
  std::vector<std::vector<float>> alone;
  std::vector<std::vector<int32_t>> prompts = {prompt_, {1, 2, 3}, {900}, {4, 4, 4, 4, 4, 4, 4}};
  for (int i = 0; i < 4; ++i) alone.push_back(Logits(*m, i, prompts[i]));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(m->ResetSlot(i).ok());
  // Together, in one step, with one entry that wants no output.
  std::vector<StepEntry> entries(4);
  for (int i = 0; i < 4; ++i) {
    entries[i].slot = 3 - i;  // slots need not follow entry order
    entries[i].inputs = {InputRowsView::Tokens(prompts[i])};
    entries[i].output = i == 2 ? StepOutput::kNone : StepOutput::kLogits;
  }
  std::vector<StepResult> res;
  ASSERT_TRUE(m->Step(entries, &res).ok());
  for (int i = 0; i < 4; ++i) {
    if (i == 2) {
      EXPECT_TRUE(res[i].logits.empty());
      continue;
    }
    std::vector<float> l(res[i].logits.begin(), res[i].logits.end());
    EXPECT_LT(MaxRelDiff(l, alone[i]), 1e-4f) << "entry " << i;
  }
  // Decode batch of 4 (GEMV path) and 6 rows (GEMM path) keep agreeing with single decode.
  std::vector<float> single = Logits(*m, 3, {11});
  auto m2 = Make(4);
  Logits(*m2, 0, prompts[0]);
  Logits(*m2, 1, prompts[1]);
  entries.clear();
  for (int i = 0; i < 2; ++i) {
    StepEntry e;
    e.slot = i;
    static const std::vector<int32_t> tok11 = {11}, tok12 = {12, 13, 14, 15, 16};
    e.inputs = {InputRowsView::Tokens(i == 0 ? tok11 : tok12)};
    e.output = StepOutput::kLogits;
    entries.push_back(e);
  }
  ASSERT_TRUE(m2->Step(entries, &res).ok());
  std::vector<float> batched(res[0].logits.begin(), res[0].logits.end());
  EXPECT_LT(MaxRelDiff(batched, single), 1e-4f);
}

TEST_F(CpuModelTest, EmbeddingRowsEqualTokenRows) {
  auto m = Make(2);
  std::vector<float> via_tokens = Logits(*m, 0, prompt_);
  // The same rows, as precomputed embeddings (emb[token]) mixed with tokens.
  const TensorView emb = ViewsOf(*tensors_).at("emb.weight");
  const int C = 128;
  std::vector<float> rows(4 * C);
  for (int i = 0; i < 4; ++i) {
    ConvertToF32(emb.dtype, static_cast<const float*>(emb.data) + prompt_[i] * C, C,
                 rows.data() + i * C);
  }
  const std::vector<int32_t> rest(prompt_.begin() + 4, prompt_.end());
  StepEntry e;
  e.slot = 1;
  e.inputs = {InputRowsView::Embeddings(rows), InputRowsView::Tokens(rest)};
  e.output = StepOutput::kLogits;
  std::vector<StepResult> res;
  ASSERT_TRUE(m->Step({e}, &res).ok());
  std::vector<float> via_emb(res[0].logits.begin(), res[0].logits.end());
  EXPECT_LT(MaxRelDiff(via_emb, via_tokens), 1e-5f);
}

// kHidden returns ln_out of the last row: the head applied to it gives the logits of the same
// input, whatever else is in the batch, and the state advances exactly as with kLogits.
TEST_F(CpuModelTest, HiddenOutputIsWhatTheHeadMultiplies) {
  auto m = Make(3);
  const std::vector<float> logits = Logits(*m, 0, prompt_);
  StepEntry hid, other;
  hid.slot = 1;
  hid.inputs = {InputRowsView::Tokens(prompt_)};
  hid.output = StepOutput::kHidden;
  const std::vector<int32_t> other_tokens = {9, 8, 7};
  other.slot = 2;
  other.inputs = {InputRowsView::Tokens(other_tokens)};
  other.output = StepOutput::kLogits;
  std::vector<StepResult> res;
  ASSERT_TRUE(m->Step({other, hid}, &res).ok());
  const int C = 128, V = 1000;
  ASSERT_EQ(res[1].hidden.size(), static_cast<size_t>(C));
  EXPECT_TRUE(res[1].logits.empty());
  EXPECT_EQ(res[0].logits.size(), static_cast<size_t>(V));
  const TensorView head = ViewsOf(*tensors_).at("head.weight");
  std::vector<float> head_f32(static_cast<size_t>(V) * C);
  ConvertToF32(head.dtype, head.data, V * C, head_f32.data());
  std::vector<float> via_hidden(V);
  for (int v = 0; v < V; ++v) {
    double acc = 0;
    for (int c = 0; c < C; ++c) acc += double(head_f32[v * C + c]) * res[1].hidden[c];
    via_hidden[v] = static_cast<float>(acc);
  }
  EXPECT_LT(MaxRelDiff(via_hidden, logits), 1e-5f);
  // Both slots hold the same state now: the next token gives the same logits.
  EXPECT_EQ(Logits(*m, 0, {11}), Logits(*m, 1, {11}));
}

TEST_F(CpuModelTest, SlotCopyWriteAndResetContinueIdentically) {
  auto m = Make(3);
  Logits(*m, 0, prompt_);
  ASSERT_TRUE(m->CopySlot(0, 1).ok());
  std::vector<float> blob(m->config().StateFloats());
  ASSERT_TRUE(m->ReadSlot(0, absl::MakeSpan(blob)).ok());
  ASSERT_TRUE(m->WriteSlot(2, blob).ok());
  std::vector<float> a = Logits(*m, 0, {77}), b = Logits(*m, 1, {77}), c = Logits(*m, 2, {77});
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  ASSERT_TRUE(m->ResetSlot(1).ok());
  std::vector<float> fresh = Logits(*m, 1, {77});
  EXPECT_GT(MaxRelDiff(fresh, a), 1e-3f);  // the state mattered
}

// A ColdState of another backend's making: only its Read is known.
class ForeignColdState final : public ColdState {
 public:
  explicit ForeignColdState(std::vector<float> v) : v_(std::move(v)) {}
  absl::Status Read(absl::Span<float> out) const override {
    std::copy(v_.begin(), v_.end(), out.begin());
    return absl::OkStatus();
  }
  int64_t bytes() const override { return static_cast<int64_t>(v_.size()) * 4; }

 private:
  std::vector<float> v_;
};

TEST_F(CpuModelTest, OffloadedStatesComeBackIntoAnySlotAndContinueIdentically) {
  auto m = Make(3);
  Logits(*m, 0, prompt_);
  auto cold = m->OffloadSlot(0);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ((*cold)->bytes(), m->config().StateBytes());
  std::vector<float> a = Logits(*m, 0, {77});  // the slot moves on; the offloaded state not
  ASSERT_TRUE(m->RestoreSlot(1, **cold).ok());
  std::vector<float> blob(m->config().StateFloats());
  ASSERT_TRUE((*cold)->Read(absl::MakeSpan(blob)).ok());
  ForeignColdState foreign(blob);
  ASSERT_TRUE(m->RestoreSlot(2, foreign).ok());
  EXPECT_EQ(Logits(*m, 1, {77}), a);
  EXPECT_EQ(Logits(*m, 2, {77}), a);
  EXPECT_EQ(m->OffloadSlot(3).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m->RestoreSlot(-1, foreign).code(), absl::StatusCode::kOutOfRange);
  std::vector<float> short_buffer(3);
  EXPECT_EQ((*cold)->Read(absl::MakeSpan(short_buffer)).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuModelTest, Bf16WeightsStayCloseToF32) {
  auto f32 = Make(1, ModelOptions::WeightType::kF32);
  auto bf16 = Make(1, ModelOptions::WeightType::kBF16);
  EXPECT_EQ(bf16->info().weight_dtype, "bf16");
  EXPECT_LT(bf16->info().weight_bytes, f32->info().weight_bytes * 0.6);
  std::vector<float> a = Logits(*f32, 0, prompt_), b = Logits(*bf16, 0, prompt_);
  const float d = MaxRelDiff(b, a);
  EXPECT_GT(d, 0.0f);  // rounding happened
  EXPECT_LT(d, 0.1f);  // but the model is the same
}

TEST_F(CpuModelTest, F16StatesAreRefusedAsACudaOption) {
  auto tensors = MakeRandomRwkv7(RandomModelSpec{}).value();
  ModelOptions o;
  o.state_type = ModelOptions::StateType::kF16;
  auto m = CpuModel::Create(ViewsOf(tensors), o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("CUDA"), absl::string_view::npos) << m.status();
}

TEST_F(CpuModelTest, F16WeightsAreRefusedAsACudaOption) {
  auto tensors = MakeRandomRwkv7(RandomModelSpec{}).value();
  ModelOptions o;
  o.weight_type = ModelOptions::WeightType::kF16;
  auto m = CpuModel::Create(ViewsOf(tensors), o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("CUDA"), absl::string_view::npos) << m.status();
}

TEST_F(CpuModelTest, Int8WeightsStayCloseToF32) {
  auto f32 = Make(1, ModelOptions::WeightType::kF32);
  auto i8 = Make(1, ModelOptions::WeightType::kI8);
  EXPECT_EQ(i8->info().weight_dtype, "int8");
  EXPECT_LT(i8->info().decode_bytes_per_token, f32->info().decode_bytes_per_token * 0.3);
  std::vector<float> a = Logits(*f32, 0, prompt_), b = Logits(*i8, 0, prompt_);
  const float d = MaxRelDiff(b, a);
  EXPECT_GT(d, 0.0f);
  EXPECT_LT(d, 0.2f);
  // Batched decode through the widened (GEMM / multi-row) paths agrees with single rows.
  auto i8b = Make(8, ModelOptions::WeightType::kI8);
  std::vector<StepEntry> entries(8);
  std::vector<std::vector<int32_t>> toks(8);
  for (int s = 0; s < 8; ++s) {
    toks[s] = prompt_;
    entries[s].slot = s;
    entries[s].inputs = {InputRowsView::Tokens(toks[s])};
    entries[s].output = StepOutput::kLogits;
  }
  std::vector<StepResult> res;
  ASSERT_TRUE(i8b->Step(entries, &res).ok());
  std::vector<float> batched(res[5].logits.begin(), res[5].logits.end());
  EXPECT_LT(MaxRelDiff(batched, b), 1e-4f);
}

// int4 (ModelOptions::WeightType::kI4): fewer bytes per token than int8, logits near f32's, and
// beside a token's weights the bf16 embedding table and the value matrices' input-major int4
// copies (sparse_ffn; four-row products of two-token steps count their inputs).
TEST_F(CpuModelTest, Int4WeightsStayCloseToF32) {
  auto f32 = Make(1, ModelOptions::WeightType::kF32);
  auto i8 = Make(1, ModelOptions::WeightType::kI8);
  auto i4 = Make(1, ModelOptions::WeightType::kI4);
  EXPECT_EQ(i4->info().weight_dtype, "int4");
  EXPECT_LT(i4->info().decode_bytes_per_token, i8->info().decode_bytes_per_token * 0.8);
  const ModelConfig& c = i4->info().config;
  EXPECT_EQ(i4->info().weight_bytes - i4->info().decode_bytes_per_token,
            int64_t{c.vocab_size} * c.n_embd * 2 +
                c.n_layer * cpu::I4InputMajorBytes(c.n_embd, c.ffn_size))
      << "int4's weights besides a token's: the bf16 embedding table and the sparse copies";
  const std::vector<float> a = Logits(*f32, 0, prompt_), b = Logits(*i4, 0, prompt_);
  const float d = MaxRelDiff(b, a);
  EXPECT_GT(d, MaxRelDiff(Logits(*i8, 0, prompt_), a));
  EXPECT_LT(d, 0.5f);
  const int64_t before = i4->counters().sparse_ffn_inputs;
  Logits(*i4, 0, {1, 2, 3});
  EXPECT_EQ(i4->counters().sparse_ffn_inputs - before, int64_t{c.n_layer} * c.ffn_size);
}

TEST_F(CpuModelTest, ResultsAreBitExactAcrossBatchesAndChunks) {
  ModelOptions o;
  o.num_slots = 3;
  o.weight_type = ModelOptions::WeightType::kBF16;
  auto m = CpuModel::Create(ViewsOf(*tensors_), o).value();
  std::vector<int32_t> longp;
  for (int i = 0; i < 150; ++i) longp.push_back(1 + (i * 37) % 999);
  const std::vector<float> alone = Logits(*m, 0, longp);
  // Chunked differently, and batched with another sequence's prefill and a decode.
  const std::vector<int32_t> other(90, 5), one = {7};
  Logits(*m, 2, {3});
  StepEntry a, b, c;
  a.slot = 1;
  // Step 1 has 51 rows, step 2 has 190 and the lone prefill 150: the rows are tiled differently
  // each time, and the bits must not move.
  a.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(longp).subspan(0, 50))};
  b.slot = 0;
  ASSERT_TRUE(m->ResetSlot(0).ok());
  b.inputs = {InputRowsView::Tokens(other)};
  c.slot = 2;
  c.inputs = {InputRowsView::Tokens(one)};
  c.output = StepOutput::kLogits;
  std::vector<StepResult> res;
  ASSERT_TRUE(m->Step({a, c}, &res).ok());
  a.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(longp).subspan(50))};
  a.output = StepOutput::kLogits;
  ASSERT_TRUE(m->Step({b, a}, &res).ok());
  std::vector<float> batched(res[1].logits.begin(), res[1].logits.end());
  EXPECT_EQ(batched, alone);  // bit for bit
}

// The same bits whatever the batch, over a long seeded run of random work
// (tests/engine/random_work.h: steps of every mix and output, decode steps of 1 to 6 sequences,
// slot copies, resets, offloads, restores and imports between them): one model runs each step
// whole on two threads, the other each entry alone on one thread. Every weight type, the sparse
// channel mix's value product on (it reads the value weights of nonzero inputs only, in steps of
// up to 4 rows, so whether it runs depends on the batch).
TEST_F(CpuModelTest, RandomWorkIsBitExactWhateverTheBatch) {
  struct Run {
    const char* name;
    ModelOptions::WeightType type;
    uint64_t seed;
  };
  for (const Run& run : {Run{"f32", ModelOptions::WeightType::kF32, 7},
                         Run{"bf16", ModelOptions::WeightType::kBF16, 8},
                         Run{"int8", ModelOptions::WeightType::kI8, 9},
                         Run{"int4", ModelOptions::WeightType::kI4, 10}}) {
    testing_util::RandomWorkOptions w;
    w.name = run.name;
    w.seed = run.seed;
    w.operations = 300;
    w.exact = true;
    w.reference_entry_by_entry = true;
    auto alone = Make(6, run.type, 1), batched = Make(6, run.type, 2);
    testing_util::RandomWork(w, *alone, *batched).Run();
  }
}

TEST_F(CpuModelTest, StateMemoryBudgetSetsTheSlotCount) {
  ModelOptions o;
  o.weight_type = ModelOptions::WeightType::kF32;
  const int64_t state = 3LL * 128 * 66 * 4;
  o.num_slots = 2;
  o.state_memory_bytes = state * 7 + state / 2;
  auto m = CpuModel::Create(ViewsOf(*tensors_), o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->num_slots(), 7);
  EXPECT_TRUE((*m)->ResetSlot(6).ok());
  o.state_memory_bytes = state;  // holds one, two needed
  auto small = CpuModel::Create(ViewsOf(*tensors_), o);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(small.status().message().find("holds 1 states"), std::string::npos) << small.status();
}

// The channel mix's value product skipping zero activations (ModelOptions::sparse_ffn, on by
// default) changes no bit: prefill, decode of one sequence and of batches on both sides of
// kSparseMaxRows, in bf16, int8 and int4. The model counts the inputs those products may skip
// and the ones they read (Model::counters: the server's modrwkv_sparse_ffn_inputs*_total).
TEST_F(CpuModelTest, SparseFfnChangesNoBit) {
  for (auto wt : {ModelOptions::WeightType::kBF16, ModelOptions::WeightType::kI8,
                  ModelOptions::WeightType::kI4}) {
    std::vector<std::vector<float>> got[2];
    for (bool sparse : {true, false}) {
      ModelOptions o;
      o.num_slots = 12;
      o.weight_type = wt;
      o.threads = 2;
      o.sparse_ffn = sparse;
      auto m = CpuModel::Create(ViewsOf(*tensors_), o).value();
      std::vector<std::vector<float>>& out = got[sparse];
      for (int s = 0; s < 12; ++s) out.push_back(Logits(*m, s, {s + 1, 2 * s + 3}));
      for (int batch : {1, 3, 12}) {
        for (int step = 0; step < 3; ++step) {
          std::vector<StepEntry> entries(batch);
          std::vector<std::vector<int32_t>> tok(batch);
          for (int i = 0; i < batch; ++i) {
            tok[i] = {100 + 7 * i + step};
            entries[i].slot = i;
            entries[i].inputs = {InputRowsView::Tokens(tok[i])};
            entries[i].output = StepOutput::kLogits;
          }
          std::vector<StepResult> res;
          ASSERT_TRUE(m->Step(entries, &res).ok());
          for (const StepResult& r : res) out.emplace_back(r.logits.begin(), r.logits.end());
        }
      }
      // Steps of at most kSparseMaxRows rows: the 12 two-token prompts and the 6 decode steps of
      // batches 1 and 3, each through every layer's value product.
      const ModelConfig& cfg = m->info().config;
      const int64_t inputs = 18LL * cfg.n_layer * cfg.ffn_size;
      const ModelCounters c = m->counters();
      EXPECT_EQ(c.sparse_ffn_inputs, sparse ? inputs : 0);
      if (sparse && wt == ModelOptions::WeightType::kI4) {
        // Half of them nonzero is above int4's kSparseMaxDensityI4: every step takes the packed
        // copy (the sparse int4 path itself: kernels_test and the int4 demo tests).
        EXPECT_EQ(c.sparse_ffn_inputs_read, inputs);
      } else if (sparse) {  // random weights: about half of the relu^2 activations are zero, yet
        // a union over 3 rows is ~90% nonzero and takes the packed copy (all counted read)
        EXPECT_GT(c.sparse_ffn_inputs_read, inputs / 4);
        EXPECT_LT(c.sparse_ffn_inputs_read, inputs);
      } else {
        EXPECT_EQ(c.sparse_ffn_inputs_read, 0);
      }
    }
    ASSERT_EQ(got[0].size(), got[1].size());
    for (size_t i = 0; i < got[0].size(); ++i) EXPECT_EQ(got[0][i], got[1][i]) << "result " << i;
  }
}

TEST_F(CpuModelTest, ThreadCountDoesNotChangeResults) {
  auto one = Make(1, ModelOptions::WeightType::kF32, 1);
  auto two = Make(1, ModelOptions::WeightType::kF32, 2);
  EXPECT_LT(MaxRelDiff(Logits(*one, 0, prompt_), Logits(*two, 0, prompt_)), 1e-5f);
}

TEST_F(CpuModelTest, RefusesBadSteps) {
  auto m = Make(2);
  std::vector<StepResult> res;
  const std::vector<int32_t> bad = {1, 1000};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(bad)};
  absl::Status st = m->Step({e}, &res);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token id 1000"), std::string::npos) << st;

  e.inputs = {};
  EXPECT_EQ(m->Step({e}, &res).code(), absl::StatusCode::kInvalidArgument);

  const std::vector<int32_t> ok = {1};
  e.inputs = {InputRowsView::Tokens(ok)};
  e.slot = 2;
  EXPECT_EQ(m->Step({e}, &res).code(), absl::StatusCode::kOutOfRange);

  e.slot = 0;
  StepEntry dup = e;
  EXPECT_EQ(m->Step({e, dup}, &res).code(), absl::StatusCode::kInvalidArgument);

  e.output = StepOutput::kSample;  // no sampler
  EXPECT_EQ(m->Step({e}, &res).code(), absl::StatusCode::kInvalidArgument);

  const std::vector<float> ragged(100, 0.0f);
  e.output = StepOutput::kNone;
  e.inputs = {InputRowsView::Embeddings(ragged)};
  EXPECT_EQ(m->Step({e}, &res).code(), absl::StatusCode::kInvalidArgument);

  std::vector<float> small(10);
  EXPECT_EQ(m->ReadSlot(0, absl::MakeSpan(small)).code(), absl::StatusCode::kInvalidArgument);
  // The model still works after refusals.
  EXPECT_FALSE(Logits(*m, 0, {1, 2}).empty());
}

}  // namespace
}  // namespace modrwkv::cpu

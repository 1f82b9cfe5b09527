// engine/cuda/cuda_model against the CPU backend on the same random weights: logits, hidden
// states and slot states after mixed steps (prefill chunks, embedding rows, decode tokens of
// several sequences), a state exported on the GPU and continued on the CPU, greedy generation
// (random weights and the trained demo model), device sampling and logprobs, CUDA graphs,
// overlapped launches, the slot operations and the errors; 16-bit weights and f16 states are in
// cuda_half_check.cc. Built by engine/cuda/CMakeLists.txt as `cuda_model_test` (named *_check.cc:
// see wkv_cuda_check.cc). Without a GPU the device cases skip.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/launch.h"
#include "engine/loader/model_loader.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/demo_assets.h"
#include "tests/engine/cuda/model_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::Bf16Options;
using testing_util::EntriesFor;
using testing_util::HaveDevice;
using testing_util::kTol;
using testing_util::RelErr;
using testing_util::SmallSpec;

TEST(CudaModelTest, WithoutADeviceCreateIsFailedPrecondition) {
  if (HaveDevice()) GTEST_SKIP() << "a CUDA device is present";
  RandomModelSpec spec;
  spec.vocab_size = 256;
  auto tensors = MakeRandomRwkv7(spec);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ModelOptions o;
  auto m = CudaModel::Create(ViewsOf(*tensors), o, 0);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
}

TEST(DecodeBucketTest, PadsToFewSizes) {
  EXPECT_EQ(DecodeBucket(0), 0);
  EXPECT_EQ(DecodeBucket(1), 1);
  EXPECT_EQ(DecodeBucket(3), 4);
  EXPECT_EQ(DecodeBucket(8), 8);
  EXPECT_EQ(DecodeBucket(9), 16);
  EXPECT_EQ(DecodeBucket(64), 64);
  EXPECT_EQ(DecodeBucket(65), 96);
  EXPECT_EQ(DecodeBucket(256), 256);
  EXPECT_EQ(DecodeBucket(513), 640);
  int sizes = 0;
  for (int n = 1; n <= 1024; ++n) {
    const int b = DecodeBucket(n);
    ASSERT_GE(b, n);
    ASSERT_LT(b, 2 * n) << n;  // less than doubled
    sizes += DecodeBucket(n - 1) != b;
  }
  EXPECT_LE(sizes, 40);  // shapes, and so graphs, for every batch up to 1024
}

// Both backends on one random model (f32 weights: the GPU keeps f32, so the only differences
// are the order of float sums).
class CudaVsCpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
    const RandomModelSpec spec = SmallSpec(7, DType::kF32, 3);
    auto tensors = MakeRandomRwkv7(spec);
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    tensors_ = std::move(*tensors);
    ModelOptions o;
    o.num_slots = 4;
    o.threads = 1;
    auto cpu = cpu::CpuModel::Create(ViewsOf(tensors_), o);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
    auto gpu = CudaModel::Create(ViewsOf(tensors_), o, 0);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(*gpu);
  }

  // Runs the same step on both and compares every output.
  void StepBoth(const std::vector<StepEntry>& entries, double tol) {
    std::vector<StepResult> c, g;
    ASSERT_TRUE(cpu_->Step(entries, &c).ok());
    const absl::Status st = gpu_->Step(entries, &g);
    ASSERT_TRUE(st.ok()) << st;
    for (size_t e = 0; e < entries.size(); ++e) {
      EXPECT_EQ(c[e].logits.empty(), g[e].logits.empty()) << e;
      EXPECT_EQ(c[e].hidden.empty(), g[e].hidden.empty()) << e;
      if (!c[e].logits.empty()) {
        EXPECT_LT(RelErr(c[e].logits, g[e].logits), tol) << "entry " << e;
      }
      if (!c[e].hidden.empty()) {
        EXPECT_LT(RelErr(c[e].hidden, g[e].hidden), tol) << "entry " << e;
      }
    }
  }

  void ExpectSameSlot(int slot, double tol) {
    const int64_t n = cpu_->config().StateFloats();
    std::vector<float> a(n), b(n);
    ASSERT_TRUE(cpu_->ReadSlot(slot, absl::MakeSpan(a)).ok());
    ASSERT_TRUE(gpu_->ReadSlot(slot, absl::MakeSpan(b)).ok());
    EXPECT_LT(RelErr(a, b), tol) << "slot " << slot;
  }

  std::vector<OwnedTensor> tensors_;
  std::unique_ptr<cpu::CpuModel> cpu_;
  std::unique_ptr<CudaModel> gpu_;
};

TEST_F(CudaVsCpuTest, MixedStepsMatchTheCpu) {
  const std::vector<int32_t> prompt = {5, 17, 300, 2, 999, 64, 128};
  std::vector<float> rows(3 * 128);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = std::sin(0.37 * i);
  const std::vector<int32_t> two = {11, 12};
  const std::vector<int32_t> one = {42};
  std::vector<StepEntry> step(3);
  step[0].slot = 0;
  step[0].inputs = {InputRowsView::Tokens(prompt)};
  step[0].output = StepOutput::kLogits;
  step[1].slot = 1;
  step[1].inputs = {InputRowsView::Embeddings(rows), InputRowsView::Tokens(two)};
  step[1].output = StepOutput::kHidden;
  step[2].slot = 2;
  step[2].inputs = {InputRowsView::Tokens(one)};
  step[2].output = StepOutput::kNone;
  StepBoth(step, kTol);
  for (int s = 0; s < 3; ++s) ExpectSameSlot(s, kTol);

  // Decode: one token each, all with logits.
  const std::vector<int32_t> t0 = {7}, t1 = {8}, t2 = {9};
  std::vector<StepEntry> decode(3);
  const std::vector<int32_t>* toks[] = {&t0, &t1, &t2};
  for (int s = 0; s < 3; ++s) {
    decode[s].slot = s;
    decode[s].inputs = {InputRowsView::Tokens(*toks[s])};
    decode[s].output = StepOutput::kLogits;
  }
  StepBoth(decode, kTol);
  for (int s = 0; s < 3; ++s) ExpectSameSlot(s, kTol);
  // Three decode sequences run padded to four on the GPU; the padding has no slot, so the
  // unused slot 3 still holds the zero state.
  ExpectSameSlot(3, kTol);
}

// Prompts long enough for the chunked recurrence (ModelOptions::cuda_chunked_wkv: a step with 16
// or more tokens per sequence), one ending inside a chunk, beside a decode token; then decode.
TEST_F(CudaVsCpuTest, LongPromptsMatchTheCpu) {
  std::vector<int32_t> long_prompt(70), other(21);
  for (size_t i = 0; i < long_prompt.size(); ++i) long_prompt[i] = (i * 37 + 3) % 1024;
  for (size_t i = 0; i < other.size(); ++i) other[i] = (i * 91 + 5) % 1024;
  const std::vector<int32_t> one = {42};
  std::vector<StepEntry> step(3);
  for (int s = 0; s < 3; ++s) {
    step[s].slot = s;
    step[s].output = StepOutput::kLogits;
  }
  step[0].inputs = {InputRowsView::Tokens(long_prompt)};
  step[1].inputs = {InputRowsView::Tokens(other)};
  step[2].inputs = {InputRowsView::Tokens(one)};
  StepBoth(step, kTol);
  for (int s = 0; s < 3; ++s) ExpectSameSlot(s, kTol);
  for (int s = 0; s < 3; ++s) step[s].inputs = {InputRowsView::Tokens(one)};
  StepBoth(step, kTol);
  for (int s = 0; s < 3; ++s) ExpectSameSlot(s, kTol);
}

TEST_F(CudaVsCpuTest, AStateExportedFromTheGpuContinuesOnTheCpu) {
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(prompt)};
  e.output = StepOutput::kLogits;
  StepBoth({e}, kTol);
  std::vector<float> state(gpu_->config().StateFloats());
  ASSERT_TRUE(gpu_->ReadSlot(0, absl::MakeSpan(state)).ok());
  ASSERT_TRUE(cpu_->WriteSlot(3, state).ok());
  ASSERT_TRUE(gpu_->CopySlot(0, 3).ok());
  const std::vector<int32_t> next = {9};
  e.slot = 3;
  e.inputs = {InputRowsView::Tokens(next)};
  StepBoth({e}, kTol);
  // Reset gives the zero state on both.
  ASSERT_TRUE(cpu_->ResetSlot(3).ok());
  ASSERT_TRUE(gpu_->ResetSlot(3).ok());
  ExpectSameSlot(3, kTol);
}

// The cold tier's copies are queued on the stream, not waited for: a slot offloaded and at once
// stepped on keeps, in its ColdState, the state from before the step; restored into another slot
// it continues as the CPU does; a buffer given back while its restore may still be in flight is
// reused by the next offload with the right contents.
TEST_F(CudaVsCpuTest, OffloadedStatesKeepTheirStateWhileTheSlotMovesOn) {
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8}, more = {9, 10, 11}, next = {12};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(prompt)};
  e.output = StepOutput::kLogits;
  StepBoth({e}, kTol);
  const int64_t n = gpu_->config().StateFloats();
  std::vector<float> before(n), now(n), read(n);
  ASSERT_TRUE(gpu_->ReadSlot(0, absl::MakeSpan(before)).ok());
  auto cold = gpu_->OffloadSlot(0);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ((*cold)->bytes(), gpu_->StateBytes());
  e.inputs = {InputRowsView::Tokens(more)};
  StepBoth({e}, kTol);  // slot 0 moves on at once
  auto cold2 = gpu_->OffloadSlot(0);
  ASSERT_TRUE(cold2.ok()) << cold2.status();
  ASSERT_TRUE(gpu_->RestoreSlot(2, **cold).ok());
  cold->reset();  // its buffer back to the spares, its restore perhaps still queued
  auto cold3 = gpu_->OffloadSlot(2);  // reuses that buffer
  ASSERT_TRUE(cold3.ok()) << cold3.status();
  ASSERT_TRUE(gpu_->ResetSlot(2).ok());
  ASSERT_TRUE(gpu_->ReadSlot(0, absl::MakeSpan(now)).ok());
  ASSERT_TRUE((*cold2)->Read(absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, now);
  ASSERT_TRUE((*cold3)->Read(absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, before);
  ASSERT_TRUE(gpu_->RestoreSlot(2, **cold3).ok());
  ASSERT_TRUE(cpu_->WriteSlot(2, before).ok());
  e.slot = 2;
  e.inputs = {InputRowsView::Tokens(next)};
  StepBoth({e}, kTol);
  // Another backend's ColdState goes in through WriteSlot.
  HostColdState host(before);
  ASSERT_TRUE(gpu_->RestoreSlot(3, host).ok());
  ASSERT_TRUE(gpu_->ReadSlot(3, absl::MakeSpan(read)).ok());
  EXPECT_EQ(read, before);
  EXPECT_EQ(gpu_->OffloadSlot(4).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(gpu_->RestoreSlot(-1, **cold3).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*cold3)->Read(absl::MakeSpan(read).subspan(1)).code(),
            absl::StatusCode::kInvalidArgument);
}

// The op profile (cuda_bench --breakdown) times the operations without changing what the step
// computes: a profiled step still matches the CPU, and every layer operation is in it.
TEST_F(CudaVsCpuTest, OpProfileNamesTheOperationsAndChangesNoResult) {
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(prompt)};
  e.output = StepOutput::kLogits;
  gpu_->set_op_profile(true);
  StepBoth({e}, kTol);
  gpu_->set_op_profile(false);
  auto ops = gpu_->TakeOpProfile();
  ASSERT_TRUE(ops.ok()) << ops.status();
  std::map<std::string, CudaModel::OpTime> by_name;
  for (const CudaModel::OpTime& t : *ops) by_name[t.op] = t;
  for (const char* op : {"upload", "layer norm", "token shift", "r, k, v", "LoRA (w, a, v, g)",
                         "wkv (prepare, recurrence, group norm, gate)", "output", "ffn key",
                         "ffn value", "head", "download"}) {
    ASSERT_TRUE(by_name.count(op)) << op;
    EXPECT_GT(by_name[op].seconds, 0) << op;
  }
  // Weight bytes: three layers of r, k, v (C x C f32 each) and one head (V x C). Every byte:
  // with them, the 8 rows in and out (the output product's also read: it accumulates); the
  // time-mixing core's six rows in (r, w, a, k, v, g), v_first written by the first layer and
  // read with the value residual's gate by the later ones, y out, the state (2 heads of 64 x 64)
  // read and written, and eight parameter vectors. FLOPs: two per multiply-add.
  const double C = 128, rows = 8 * C * 4, state = 2 * 64 * 64 * 4;
  EXPECT_EQ(by_name["r, k, v"].cost.weight_bytes, 3 * 3 * C * C * 4);
  EXPECT_EQ(by_name["r, k, v"].cost.bytes, 3 * 3 * (C * C * 4 + 2 * rows));
  EXPECT_EQ(by_name["r, k, v"].cost.flops, 3 * 3 * 2 * 8 * C * C);
  EXPECT_EQ(by_name["output"].cost.bytes, 3 * (C * C * 4 + 3 * rows));
  EXPECT_EQ(by_name["head"].cost.weight_bytes, 1024 * C * 4);
  const OpCost& wkv = by_name["wkv (prepare, recurrence, group norm, gate)"].cost;
  EXPECT_EQ(wkv.weight_bytes, 0);
  EXPECT_EQ(wkv.bytes, (8 + 9 + 9) * rows + 3 * (2 * state + 8 * C * 4));
  EXPECT_EQ(wkv.flops, 0);
  // A decode step (one token per sequence) runs the time-mixing core as one kernel too.
  const std::vector<int32_t> one = {7};
  e.inputs = {InputRowsView::Tokens(one)};
  gpu_->set_op_profile(true);
  StepBoth({e}, kTol);
  gpu_->set_op_profile(false);
  ops = gpu_->TakeOpProfile();
  ASSERT_TRUE(ops.ok()) << ops.status();
  by_name.clear();
  for (const CudaModel::OpTime& t : *ops) by_name[t.op] = t;
  EXPECT_TRUE(by_name.count("wkv (prepare, recurrence, group norm, gate)"));
  EXPECT_FALSE(by_name.count("prepare wkv"));
  e.inputs = {InputRowsView::Tokens(prompt)};
  // Taken means started over; steps without the profile add nothing.
  StepBoth({e}, kTol);
  ops = gpu_->TakeOpProfile();
  ASSERT_TRUE(ops.ok());
  EXPECT_TRUE(ops->empty());
}

// A prefill step runs the time-mixing core fused (ModelOptions::cuda_fused_prefill): as one
// kernel where the recurrence walks its tokens (engine/cuda/wkv_prefill.cuh), as the chunked
// recurrence on raw rows + GroupNorm where it runs in chunks; off, as three kernels with their
// rows through memory. Runs `steps` (prompts of several lengths, later steps continuing them) on
// gpu_ and on a GPU model with the switch off: both run the same float operations but for the
// key norm's order (chunked) and the compiler's FMA contraction, and both match the CPU. Returns
// the op profiles of the first step by op name, fused's and separate's.
using OpsByName = std::map<std::string, CudaModel::OpTime>;
std::pair<OpsByName, OpsByName> CompareFusedPrefill(
    const std::vector<std::vector<std::vector<int32_t>>>& steps,
    const std::vector<OwnedTensor>& tensors, Model& cpu, CudaModel& fused, double tol) {
  ModelOptions o;
  o.num_slots = 4;
  o.threads = 1;
  o.cuda_fused_prefill = false;
  auto separate = CudaModel::Create(ViewsOf(tensors), o, 0);
  EXPECT_TRUE(separate.ok()) << separate.status();
  if (!separate.ok()) return {};
  const int64_t n = cpu.config().StateFloats();
  for (size_t i = 0; i < steps.size(); ++i) {
    const std::vector<StepEntry> entries = EntriesFor(steps[i]);
    std::vector<StepResult> cr, fr, sr;
    fused.set_op_profile(i == 0);
    (*separate)->set_op_profile(i == 0);
    EXPECT_TRUE(cpu.Step(entries, &cr).ok());
    absl::Status st = fused.Step(entries, &fr);
    EXPECT_TRUE(st.ok()) << st;
    st.Update((*separate)->Step(entries, &sr));
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return {};
    for (size_t e = 0; e < entries.size(); ++e) {
      EXPECT_LT(RelErr(sr[e].logits, fr[e].logits), 1e-5) << "step " << i << ", entry " << e;
      EXPECT_LT(RelErr(cr[e].logits, fr[e].logits), tol) << "step " << i << ", entry " << e;
      std::vector<float> cpu_slot(n), fused_slot(n), separate_slot(n);
      EXPECT_TRUE(cpu.ReadSlot(static_cast<int>(e), absl::MakeSpan(cpu_slot)).ok());
      EXPECT_TRUE(fused.ReadSlot(static_cast<int>(e), absl::MakeSpan(fused_slot)).ok());
      EXPECT_TRUE((*separate)->ReadSlot(static_cast<int>(e), absl::MakeSpan(separate_slot)).ok());
      EXPECT_LT(RelErr(separate_slot, fused_slot), 1e-5) << "step " << i << ", slot " << e;
      EXPECT_LT(RelErr(cpu_slot, fused_slot), tol) << "step " << i << ", slot " << e;
    }
  }
  fused.set_op_profile(false);
  (*separate)->set_op_profile(false);
  std::pair<OpsByName, OpsByName> by_name;
  auto fused_ops = fused.TakeOpProfile();
  auto separate_ops = (*separate)->TakeOpProfile();
  EXPECT_TRUE(fused_ops.ok()) << fused_ops.status();
  EXPECT_TRUE(separate_ops.ok()) << separate_ops.status();
  if (!fused_ops.ok() || !separate_ops.ok()) return {};
  for (const CudaModel::OpTime& t : *fused_ops) by_name.first[t.op] = t;
  for (const CudaModel::OpTime& t : *separate_ops) by_name.second[t.op] = t;
  return by_name;
}

// Walking: prompts of a partial chunk of 8 tokens, a full one and more, a second prompt step
// continuing them, then a decode step. The op profile shows which path ran and what the separate
// recurrence moves.
TEST_F(CudaVsCpuTest, FusedPrefillMatchesTheThreeKernels) {
  const auto [fused, separate] = CompareFusedPrefill(
      {{{5, 17, 300, 2, 999}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {64, 128, 256}},
       {{8, 9, 10, 11, 12, 13, 14, 15}, {1000}, {3, 1, 4, 1, 5, 9, 2, 6, 5}},
       {{7}, {8}, {9}}},
      tensors_, *cpu_, *gpu_, kTol);
  EXPECT_TRUE(fused.count("wkv (prepare, recurrence, group norm, gate)"));
  for (const char* op : {"prepare wkv", "wkv", "group norm, gate"}) {
    EXPECT_FALSE(fused.count(op)) << op;
    EXPECT_TRUE(separate.count(op)) << op;
  }
  EXPECT_FALSE(separate.count("wkv (prepare, recurrence, group norm, gate)"));
  // The separate recurrence: three layers of its six rows in and one out (19 rows of 128 f32),
  // and three sequences' states (2 heads of 64 x 64) read and written.
  const double rows = 19 * 128 * 4, state = 2 * 64 * 64 * 4;
  EXPECT_EQ(separate.at("wkv").cost.bytes, 3 * (7 * rows + 3 * 2 * state));
}

// Chunked (prompts of 16 tokens or more on average): the raw rows prepared inside the chunked
// recurrence, then GroupNorm + gate. Prompts ending inside a chunk, one empty of prompt tokens in
// the second step (a decode token beside long prompts), then decode.
TEST_F(CudaVsCpuTest, FusedChunkedPrefillMatchesTheThreeKernels) {
  std::vector<int32_t> a(70), b(37), c(16), d(40);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int32_t>((i * 37 + 3) % 1024);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int32_t>((i * 91 + 5) % 1024);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<int32_t>((i * 13 + 1) % 1024);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<int32_t>((i * 7 + 11) % 1024);
  const auto [fused, separate] =
      CompareFusedPrefill({{a, b, c}, {d, {5}, b}, {{7}, {8}, {9}}}, tensors_, *cpu_, *gpu_, kTol);
  for (const char* op : {"wkv (prepare, recurrence)", "group norm, gate"}) {
    EXPECT_TRUE(fused.count(op)) << op;
  }
  for (const char* op : {"prepare wkv", "wkv", "wkv (prepare, recurrence, group norm, gate)"}) {
    EXPECT_FALSE(fused.count(op)) << op;
  }
  EXPECT_TRUE(separate.count("prepare wkv"));
  EXPECT_FALSE(separate.count("wkv (prepare, recurrence)"));
  // Three layers (the first writes v_first; the later ones read it and the gate): r, w, a, k, v
  // in, y, k' and v' out, over 123 rows of 128 f32; three sequences' states read and written.
  const double rows = 123 * 128 * 4, state = 2 * 64 * 64 * 4, vecs = 5 * 128 * 4;
  EXPECT_EQ(fused.at("wkv (prepare, recurrence)").cost.bytes,
            (9 + 2 * 10) * rows + 3 * (3 * 2 * state + vecs));
}

TEST_F(CudaVsCpuTest, GreedyGenerationMatchesTheCpu) {
  int32_t tc = 5, tg = 5;
  int same = 0;
  constexpr int kTokens = 64;
  for (int i = 0; i < kTokens; ++i) {
    StepEntry c, g;
    c.slot = g.slot = 0;
    c.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tc, 1))};
    g.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tg, 1))};
    c.output = g.output = StepOutput::kLogits;
    std::vector<StepResult> rc, rg;
    ASSERT_TRUE(cpu_->Step({c}, &rc).ok());
    ASSERT_TRUE(gpu_->Step({g}, &rg).ok());
    auto argmax = [](absl::Span<const float> l) {
      return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    };
    tc = argmax(rc[0].logits);
    tg = argmax(rg[0].logits);
    same += tc == tg;
    if (tc != tg) break;
  }
  EXPECT_EQ(same, kTokens);
}

// The trained demo model (the vision demo's 3-layer RWKV7, bf16 in its file) loaded by the loader
// for both backends with f32 weights: 64 greedy tokens picked on the device (the Sampler's plain
// greedy path) equal the CPU's. The checkpoint is found relative to the working directory
// (tools/device-check.sh runs from the repository root) or the source tree.
TEST(CudaDemoModelTest, GreedyGenerationMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const std::string path = testing_util::DemoAsset("assets/vision-demo/rwkv-0.pth");
  if (path.empty()) GTEST_SKIP() << "assets/vision-demo/rwkv-0.pth not found";
  ModelOptions o;
  o.num_slots = 1;
  o.threads = 2;
  o.weight_type = ModelOptions::WeightType::kF32;
  auto cpu = LoadModel(path, o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  o.device = "cuda";
  auto gpu = LoadModel(path, o);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->info().backend, "cuda");
  SamplerConfig greedy;
  greedy.temperature = 0;
  auto cs = Sampler::Create(greedy, 65536).value();
  auto gs = Sampler::Create(greedy, 65536).value();
  // "User: What shape is in the picture?" in the demo's chat layout, without the picture.
  std::vector<int32_t> tc = {23,    24281, 59, 30031, 39654, 4600,  4596, 22590,
                             52467, 64,    24, 23,    5585,  41693, 59};
  std::vector<int32_t> tg = tc;
  int same = 0;
  constexpr int kTokens = 64;
  for (int i = 0; i < kTokens; ++i) {
    StepEntry c, g;
    c.slot = g.slot = 0;
    c.inputs = {InputRowsView::Tokens(tc)};
    g.inputs = {InputRowsView::Tokens(tg)};
    c.output = g.output = StepOutput::kSample;
    c.sampler = cs.get();
    g.sampler = gs.get();
    std::vector<StepResult> rc, rg;
    ASSERT_TRUE((*cpu)->Step({c}, &rc).ok());
    ASSERT_TRUE((*gpu)->Step({g}, &rg).ok());
    EXPECT_TRUE(rg[0].logits.empty());  // picked on the device
    if (rc[0].token != rg[0].token) break;
    ++same;
    tc = {rc[0].token};
    tg = {rg[0].token};
  }
  EXPECT_EQ(same, kTokens);
}

// Logprobs at any temperature come from the device with the edited logit of the chosen token
// itself (the kernel never overwrites the logits): at temperature 1 and 1e4 alike, no logits come
// back and the logprobs are ReferenceDeviceLogprobs' on the CPU's logits, within the backends'
// logit difference.
TEST_F(CudaVsCpuTest, LogprobsOnTheDeviceAtAnyTemperature) {
  for (const float temperature : {1.0f, 1e4f}) {
    SCOPED_TRACE(temperature);
    SamplerConfig cfg;
    cfg.logprobs_top_n = 2;
    cfg.seed = 5;
    cfg.temperature = temperature;
    auto sampler = Sampler::Create(cfg, 1024).value();
    const int32_t token = 3;
    StepEntry c, g;
    c.slot = g.slot = 0;
    c.inputs = g.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&token, 1))};
    c.output = StepOutput::kLogits;
    g.output = StepOutput::kSample;
    g.sampler = sampler.get();
    std::vector<StepResult> rc, rg;
    ASSERT_TRUE(cpu_->Step({c}, &rc).ok());
    ASSERT_TRUE(gpu_->Step({g}, &rg).ok());
    ASSERT_TRUE(cpu_->ResetSlot(0).ok());
    ASSERT_TRUE(gpu_->ResetSlot(0).ok());
    EXPECT_TRUE(rg[0].logits.empty());
    const DeviceLogprobs want = ReferenceDeviceLogprobs(rc[0].logits, rg[0].token, 2);
    EXPECT_NEAR(rg[0].sample.logprob, want.logprob, 1e-3);
    ASSERT_EQ(rg[0].sample.top_logprobs.size(), 2u);
    for (int t = 0; t < 2; ++t) {
      EXPECT_EQ(rg[0].sample.top_logprobs[t].first, want.ids[t]);
      EXPECT_NEAR(rg[0].sample.top_logprobs[t].second, want.values[t], 1e-3);
    }
  }
}

// Samplers run inside Step: greedy samplers of several sequences in one step pick the CPU's
// tokens, whether plain (sample.cu's argmax) or with a penalty (its edits applied first).
TEST_F(CudaVsCpuTest, SamplingEntriesPickTheCpusTokens) {
  constexpr int kSeqs = 3;
  SamplerConfig greedy;
  greedy.temperature = 0;
  std::vector<std::unique_ptr<Sampler>> cs, gs;
  std::vector<int32_t> tc(kSeqs), tg(kSeqs);
  // Sequence 1 has a penalty (drawn on the device with its edits); the others are plain greedy
  // (the device argmax), in one step.
  SamplerConfig penalized = greedy;
  penalized.presence_penalty = 0.7f;
  for (int i = 0; i < kSeqs; ++i) {
    const SamplerConfig& cfg = i == 1 ? penalized : greedy;
    cs.push_back(Sampler::Create(cfg, 1024).value());
    gs.push_back(Sampler::Create(cfg, 1024).value());
    tc[i] = tg[i] = 10 + 7 * i;
  }
  for (int step = 0; step < 16; ++step) {
    std::vector<StepEntry> c(kSeqs), g(kSeqs);
    for (int i = 0; i < kSeqs; ++i) {
      c[i].slot = g[i].slot = i;
      c[i].output = g[i].output = StepOutput::kSample;
      c[i].sampler = cs[i].get();
      g[i].sampler = gs[i].get();
      c[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tc[i], 1))};
      g[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tg[i], 1))};
    }
    std::vector<StepResult> rc, rg;
    ASSERT_TRUE(cpu_->Step(c, &rc).ok());
    ASSERT_TRUE(gpu_->Step(g, &rg).ok());
    for (int i = 0; i < kSeqs; ++i) {
      ASSERT_EQ(rg[i].token, rc[i].token) << "step " << step << " sequence " << i;
      tc[i] = rc[i].token;
      tg[i] = rg[i].token;
    }
  }
}

// Stochastic sampling on the device (sample.cu), one sequence with logprobs, in one step: the
// device's tokens are ReferenceDeviceDraw's on the CPU's logits with the same random numbers (a
// twin sampler on the CPU side prepares the same edits and draws), and the logprobs of the token
// drawn are ReferenceDeviceLogprobs' on those logits (within the backends' logit difference).
// Logits differ by float rounding between the backends, so a draw next to a boundary may
// differ: 30 of 32 steps must agree (all are expected to).
TEST_F(CudaVsCpuTest, DeviceDrawsFollowTheReferenceOnTheCpusLogits) {
  SamplerConfig cfg;
  cfg.temperature = 0.9f;
  cfg.top_p = 0.95f;
  cfg.top_k = 100;
  cfg.min_p = 0.01f;
  cfg.presence_penalty = 0.3f;
  cfg.frequency_penalty = 0.2f;
  cfg.logit_bias = {{17, 1.5f}};
  cfg.banned_tokens = {4, 5};
  cfg.seed = 1234;
  SamplerConfig with_logprobs = cfg;
  with_logprobs.logprobs_top_n = 3;
  with_logprobs.seed = 77;
  std::unique_ptr<Sampler> on_gpu[2] = {Sampler::Create(cfg, 1024).value(),
                                        Sampler::Create(with_logprobs, 1024).value()};
  std::unique_ptr<Sampler> twin[2] = {Sampler::Create(cfg, 1024).value(),
                                      Sampler::Create(with_logprobs, 1024).value()};
  ASSERT_TRUE(on_gpu[1]->CanDrawOnDevice());
  int32_t token[2] = {9, 10};
  int agree = 0;
  for (int step = 0; step < 32; ++step) {
    StepEntry c[2], g[2];
    for (int i = 0; i < 2; ++i) {
      c[i].slot = g[i].slot = i;
      c[i].inputs = g[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&token[i], 1))};
      c[i].output = StepOutput::kLogits;
      g[i].output = StepOutput::kSample;
      g[i].sampler = on_gpu[i].get();
    }
    std::vector<StepResult> rc, rg;
    ASSERT_TRUE(cpu_->Step({c[0], c[1]}, &rc).ok());
    ASSERT_TRUE(gpu_->Step({g[0], g[1]}, &rg).ok());
    for (int i = 0; i < 2; ++i) {
      std::vector<float> logits(rc[i].logits.begin(), rc[i].logits.end());
      std::vector<LogitEdit> edits;
      const DeviceDraw d = twin[i]->PrepareDeviceDraw(&edits);
      ApplyLogitEdits(absl::MakeSpan(logits), edits);
      agree += rg[i].token == ReferenceDeviceDraw(logits, d);
      EXPECT_NE(rg[i].token, 4);  // banned
      EXPECT_NE(rg[i].token, 5);
      EXPECT_TRUE(rg[i].logits.empty());  // no logits came back
      if (i == 1) {
        const DeviceLogprobs want = ReferenceDeviceLogprobs(logits, rg[i].token, 3);
        EXPECT_NEAR(rg[i].sample.logprob, want.logprob, 1e-3) << "step " << step;
        ASSERT_EQ(rg[i].sample.top_logprobs.size(), 3u);
        for (int t = 0; t < 3; ++t) {
          EXPECT_EQ(rg[i].sample.top_logprobs[t].first, want.ids[t]) << "step " << step;
          EXPECT_NEAR(rg[i].sample.top_logprobs[t].second, want.values[t], 1e-3);
        }
      }
      token[i] = rg[i].token;
      twin[i]->Accept(token[i]);
    }
  }
  EXPECT_GE(agree, 62);
}

// CUDA graphs (ModelOptions::cuda_graphs): decode steps replayed from a graph give exactly what
// the same steps launched one by one give — logits for the host, device draws and greedy picks
// in one step, over enough steps that the shape is captured and replayed; then 3 sequences
// (padded to 4 entries: a shape of its own, as none copies logits), 2 sequences, a prefill (never
// graphed) and the first shape again.
TEST(CudaGraphTest, ReplayedStepsEqualEagerOnes) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(21);
  auto tensors = MakeRandomRwkv7(spec).value();
  ModelOptions o;
  o.num_slots = 4;
  o.threads = 1;
  o.cuda_graphs = false;
  auto eager = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  o.cuda_graphs = true;
  auto graphed = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  SamplerConfig drawn;
  drawn.temperature = 0.8f;
  drawn.top_p = 0.9f;
  drawn.seed = 3;
  SamplerConfig greedy;
  greedy.temperature = 0;
  std::vector<std::unique_ptr<Sampler>> se, sg;
  for (const SamplerConfig* c : {&drawn, &greedy, &drawn}) {
    se.push_back(Sampler::Create(*c, 1024).value());
    sg.push_back(Sampler::Create(*c, 1024).value());
  }
  std::vector<int32_t> te = {1, 2, 3, 4}, tg = te;
  auto step = [&](int sequences, const char* what) {
    std::vector<StepEntry> a(sequences), b(sequences);
    for (int i = 0; i < sequences; ++i) {
      a[i].slot = b[i].slot = i;
      a[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&te[i], 1))};
      b[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tg[i], 1))};
      a[i].output = b[i].output = i == 3 ? StepOutput::kLogits : StepOutput::kSample;
      if (i < 3) {
        a[i].sampler = se[i].get();
        b[i].sampler = sg[i].get();
      }
    }
    std::vector<StepResult> ra, rb;
    ASSERT_TRUE(eager->Step(a, &ra).ok());
    ASSERT_TRUE(graphed->Step(b, &rb).ok());
    for (int i = 0; i < sequences; ++i) {
      if (i == 3) {
        ASSERT_EQ(0, std::memcmp(ra[i].logits.data(), rb[i].logits.data(), 1024 * 4)) << what;
        continue;
      }
      ASSERT_EQ(ra[i].token, rb[i].token) << what << ", sequence " << i;
      te[i] = ra[i].token;
      tg[i] = rb[i].token;
    }
  };
  for (int k = 0; k < 6; ++k) step(4, "decode of 4");
  for (int k = 0; k < 4; ++k) step(3, "decode of 3 (padded to 4 entries)");
  for (int k = 0; k < 4; ++k) step(2, "decode of 2");
  const std::vector<int32_t> prompt = {9, 8, 7, 6, 5};
  StepEntry p;
  p.slot = 3;
  p.inputs = {InputRowsView::Tokens(prompt)};
  p.output = StepOutput::kLogits;
  std::vector<StepResult> ra, rb;
  ASSERT_TRUE(eager->Step({p}, &ra).ok());
  ASSERT_TRUE(graphed->Step({p}, &rb).ok());
  ASSERT_EQ(0, std::memcmp(ra[0].logits.data(), rb[0].logits.data(), 1024 * 4));
  for (int k = 0; k < 3; ++k) step(4, "decode of 4 again");
  EXPECT_GT(graphed->graph_count(), 0u);
  EXPECT_EQ(eager->graph_count(), 0u);
  // The step's device time (events around its device work) is measured, and below a second.
  EXPECT_GT(graphed->last_step_device_seconds(), 0.0);
  EXPECT_LT(graphed->last_step_device_seconds(), 1.0);
}

// Programmatic dependent launch (launch.h) lets a kernel start before its predecessor ends; every
// kernel waits for it before reading what it wrote, so the same steps give the same bits with it
// on and off, eager and replayed from graphs. bf16 weights on a 1024-wide layer: the few-row
// products take their long rows (ffn value: 4096 weights) in two warps, so the split rows'
// shared-memory sums are covered too, and a decode step's logits match the CPU's bf16 products.
// Through the CUDA emulator each overlapped launch's first block runs up to its wait before its
// predecessor runs at all, the order furthest from stream order, on a 256-wide layer (the
// 1024-wide one takes it most of a minute; the split rows are covered by the kernels' tests).
TEST(CudaOverlapTest, OverlappedLaunchesChangeNoResult) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
#ifdef MODRWKV_CUDA_EMULATION
  constexpr int kWidth = 256;
#else
  constexpr int kWidth = 1024;
#endif
  const RandomModelSpec spec = SmallSpec(41, DType::kBF16, 2, kWidth);
  auto tensors = MakeRandomRwkv7(spec).value();
  ModelOptions o = Bf16Options(4);
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  // Each run: a 15-row and a 40-row prefill (few-row kernel and tensor cores), then decode steps
  // of three sequences; every step's logits, in order.
  auto run = [&](bool overlap, bool graphs) {
    SetOverlappedLaunches(overlap);
    EXPECT_EQ(OverlappedLaunches(), overlap && major >= 9);
    o.cuda_graphs = graphs;
    auto m = CudaModel::Create(ViewsOf(tensors), o, 0).value();
    std::vector<std::vector<float>> logits;
    auto step = [&](const std::vector<StepEntry>& entries) {
      std::vector<StepResult> res;
      ASSERT_TRUE(m->Step(entries, &res).ok());
      for (const StepResult& r : res) logits.emplace_back(r.logits.begin(), r.logits.end());
    };
    std::vector<int32_t> a(15), b(40);
    for (int i = 0; i < 15; ++i) a[i] = (i * 37) % 1024;
    for (int i = 0; i < 40; ++i) b[i] = (i * 53 + 7) % 1024;
    StepEntry e;
    e.output = StepOutput::kLogits;
    e.slot = 0;
    e.inputs = {InputRowsView::Tokens(a)};
    step({e});
    e.slot = 1;
    e.inputs = {InputRowsView::Tokens(b)};
    step({e});
    int32_t tokens[3] = {5, 6, 7};
    for (int k = 0; k < 5; ++k) {
      std::vector<StepEntry> d(3);
      for (int i = 0; i < 3; ++i) {
        d[i].slot = i;
        d[i].inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&tokens[i], 1))};
        d[i].output = StepOutput::kLogits;
        tokens[i] = (tokens[i] * 31 + k) % 1024;
      }
      step(d);
    }
    return logits;
  };
  const auto plain = run(false, false);
  for (const bool graphs : {false, true}) {
    const auto overlapped = run(true, graphs);
    ASSERT_EQ(overlapped.size(), plain.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      ASSERT_EQ(overlapped[i].size(), plain[i].size());
      ASSERT_EQ(0, std::memcmp(overlapped[i].data(), plain[i].data(), plain[i].size() * 4))
          << "step output " << i << (graphs ? " (graphs)" : " (eager)");
    }
  }
  SetOverlappedLaunches(true);
  // The first prefill's logits (few-row products, split long rows) against the CPU's bf16.
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  std::vector<int32_t> a(15);
  for (int i = 0; i < 15; ++i) a[i] = (i * 37) % 1024;
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(a)};
  e.output = StepOutput::kLogits;
  std::vector<StepResult> cr;
  ASSERT_TRUE(cpu->Step({e}, &cr).ok());
  EXPECT_LT(RelErr(cr[0].logits, plain[0]), 1e-3);
}

TEST_F(CudaVsCpuTest, BadStepsAndSlotsAreRefusedLikeOnTheCpu) {
  const std::vector<int32_t> bad = {5000};
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Tokens(bad)};
  std::vector<StepResult> r;
  const absl::Status st = gpu_->Step({e}, &r);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StepEntryOf(st), 0);
  EXPECT_EQ(gpu_->ResetSlot(4).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(gpu_->CopySlot(0, -1).code(), absl::StatusCode::kOutOfRange);
  std::vector<float> small(3);
  EXPECT_EQ(gpu_->ReadSlot(0, absl::MakeSpan(small)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::cuda

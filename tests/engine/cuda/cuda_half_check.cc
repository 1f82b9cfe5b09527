// 16-bit weights and f16 states on the GPU against the CPU backend on the same random weights:
// bf16 weights against the CPU's bf16 products on both sides of the tensor-core threshold, decode
// steps of many sequences, the fused LoRA up-projections against their own launch, fp16 weights
// against f32, and f16 states against the CPU's emulation of their rounding. Built into
// `cuda_model_test` with cuda_model_check.cc (named *_check.cc: see wkv_cuda_check.cc). Without a
// GPU the device cases skip.
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "engine/loader/model_loader.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/model_test_util.h"
#include "tests/engine/f16_state.h"

namespace modrwkv::cuda {
namespace {

using testing_util::Bf16Options;
using testing_util::EntriesFor;
using testing_util::HaveDevice;
using testing_util::kTol;
using testing_util::RelErr;
using testing_util::SmallSpec;

// bf16 weights (--dtype bf16) against the CPU's bf16 products. Below 16 rows a product goes
// through the bf16-weight kernel (f32 activations, as the CPU: within float rounding); from 16
// rows on through cuBLAS on tensor cores with the activations rounded to bf16 (the bound
// for bf16 on the GPU: 1e-2 of the logits' standard deviation).
TEST(CudaBf16Test, Bf16WeightsMatchTheCpusBf16) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(11, DType::kBF16);
  auto tensors = MakeRandomRwkv7(spec);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  const ModelOptions o = Bf16Options(2);
  auto cpu = cpu::CpuModel::Create(ViewsOf(*tensors), o).value();
  auto gpu = CudaModel::Create(ViewsOf(*tensors), o, 0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->info().weight_dtype, "bf16");
  struct Case {
    int slot, rows;
    double tol;
  };
  // 15 rows: the kernel takes rows 8 at a time, so a partial pass too; 64 rows: tensor cores;
  // each followed by a decode step on the state it left.
  for (const Case& c : {Case{0, 15, 1e-3}, Case{0, 1, 1e-3}, Case{1, 64, 1e-2}, Case{1, 1, 1e-2}}) {
    std::vector<int32_t> tokens(c.rows);
    for (int i = 0; i < c.rows; ++i) tokens[i] = (i * 37 + c.slot) % 1024;
    StepEntry e;
    e.slot = c.slot;
    e.inputs = {InputRowsView::Tokens(tokens)};
    e.output = StepOutput::kLogits;
    std::vector<StepResult> cr, gr;
    ASSERT_TRUE(cpu->Step({e}, &cr).ok());
    ASSERT_TRUE((*gpu)->Step({e}, &gr).ok());
    EXPECT_LT(RelErr(cr[0].logits, gr[0].logits), c.tol)
        << "slot " << c.slot << ", " << c.rows << " rows";
  }
}

// ModelOptions::cuda_bf16_activation_rows: the activated products' rows written by cuBLAS in
// bf16 and activated in place. A 64-row prompt and a decode step after it stay within the bf16
// bound of the CPU's bf16 (measured here: 3.5e-3 and 3.1e-3 of the logits' standard deviation,
// against 2.8e-3 and 1.4e-3 with f32 rows), and differ from the f32-row model's: the path ran.
TEST(CudaBf16Test, Bf16ActivationRowsStayWithinTheBound) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(11, DType::kBF16);
  auto tensors = MakeRandomRwkv7(spec).value();
  ModelOptions o = Bf16Options(1);
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  auto f32_rows = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  o.cuda_bf16_activation_rows = true;
  auto bf16_rows = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  for (const int rows : {64, 1}) {
    std::vector<std::vector<int32_t>> tokens(1, std::vector<int32_t>(rows));
    for (int i = 0; i < rows; ++i) tokens[0][i] = (i * 37 + 1) % 1024;
    const std::vector<StepEntry> entries = EntriesFor(tokens);  // views of `tokens`
    std::vector<StepResult> cr, fr, br;
    for (auto [model, out] : {std::pair<Model*, std::vector<StepResult>*>{cpu.get(), &cr},
                              {f32_rows.get(), &fr},
                              {bf16_rows.get(), &br}}) {
      const absl::Status st = model->Step(entries, out);
      ASSERT_TRUE(st.ok()) << st;
    }
    EXPECT_LT(RelErr(cr[0].logits, br[0].logits), 1e-2) << rows << " rows";
    EXPECT_GT(RelErr(fr[0].logits, br[0].logits), 0) << rows << " rows";
  }
}

// Decode steps of 20 sequences with bf16 weights: the tensor-core path of a decode step (16 rows
// or more), whose product inputs the fused decode kernel and NormShift write rounded to bf16
// (ActivationsOut), against the CPU's bf16, step after step on the states they leave. The bf16
// rounding of the activations costs 5e-3 to 1.2e-2 of the logits' standard deviation here
// (measured through the emulator, whose products are cuBLAS's: bf16 inputs, f32 sums), the same
// at the prompt step and after three decode steps: it does not grow.
TEST(CudaBf16Test, DecodeStepsOfManySequencesMatchTheCpusBf16) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(14, DType::kBF16);
  auto tensors = MakeRandomRwkv7(spec).value();
  constexpr int kSeqs = 20;
  const ModelOptions o = Bf16Options(kSeqs);
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  auto gpu = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  std::vector<std::vector<int32_t>> tokens(kSeqs);
  for (int s = 0; s < kSeqs; ++s) {
    tokens[s] = {(s * 37 + 1) % 1024, (s * 11 + 5) % 1024, (s * 53 + 9) % 1024};
  }
  for (int step = 0; step < 4; ++step) {  // the 3-token prompts, then three decode steps
    for (int s = 0; s < kSeqs && step > 0; ++s) tokens[s] = {(s * 29 + step * 7) % 1024};
    const std::vector<StepEntry> entries = EntriesFor(tokens);
    std::vector<StepResult> cr, gr;
    ASSERT_TRUE(cpu->Step(entries, &cr).ok());
    const absl::Status st = gpu->Step(entries, &gr);
    ASSERT_TRUE(st.ok()) << st;
    for (int s = 0; s < kSeqs; ++s) {
      EXPECT_LT(RelErr(cr[s].logits, gr[s].logits), 1.5e-2)
          << "step " << step << ", sequence " << s;
    }
  }
}

// A decode step of fewer than 16 sequences with 16-bit weights computes each layer's LoRA
// up-projections inside the fused time-mixing kernel (ModelOptions::cuda_fused_lora_up); off,
// they are a product launch of their own. Prompts and then decode steps of three sequences on
// both and on the CPU's bf16: the two GPU models differ only in the order of the
// up-projections' sums, and the op profile shows which path ran.
TEST(CudaBf16Test, FusedLoraUpMatchesItsOwnLaunch) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(15, DType::kBF16, 3);
  auto tensors = MakeRandomRwkv7(spec).value();
  constexpr int kSeqs = 3;
  ModelOptions o = Bf16Options(kSeqs);
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  auto fused = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  o.cuda_fused_lora_up = false;
  auto separate = CudaModel::Create(ViewsOf(tensors), o, 0).value();
  std::vector<std::vector<int32_t>> tokens(kSeqs);
  for (int s = 0; s < kSeqs; ++s) tokens[s] = {(s * 37 + 1) % 1024, (s * 11 + 5) % 1024};
  for (int step = 0; step < 4; ++step) {  // the 2-token prompts, then three decode steps
    for (int s = 0; s < kSeqs && step > 0; ++s) tokens[s] = {(s * 29 + step * 7) % 1024};
    const std::vector<StepEntry> entries = EntriesFor(tokens);
    const bool profile = step == 3;
    fused->set_op_profile(profile);
    separate->set_op_profile(profile);
    std::vector<StepResult> cr, fr, sr;
    ASSERT_TRUE(cpu->Step(entries, &cr).ok());
    ASSERT_TRUE(fused->Step(entries, &fr).ok());
    ASSERT_TRUE(separate->Step(entries, &sr).ok());
    for (int s = 0; s < kSeqs; ++s) {
      EXPECT_LT(RelErr(sr[s].logits, fr[s].logits), 1e-4) << "step " << step << ", sequence " << s;
      EXPECT_LT(RelErr(cr[s].logits, fr[s].logits), 1e-3) << "step " << step << ", sequence " << s;
    }
  }
  auto fused_profile = fused->TakeOpProfile();
  auto separate_profile = separate->TakeOpProfile();
  ASSERT_TRUE(fused_profile.ok()) << fused_profile.status();
  ASSERT_TRUE(separate_profile.ok()) << separate_profile.status();
  std::map<std::string, int> fused_ops, separate_ops;
  for (const CudaModel::OpTime& t : *fused_profile) ++fused_ops[t.op];
  for (const CudaModel::OpTime& t : *separate_profile) ++separate_ops[t.op];
  EXPECT_FALSE(fused_ops.count("LoRA up"));
  EXPECT_TRUE(fused_ops.count("wkv (LoRA up, prepare, recurrence, group norm, gate)"));
  EXPECT_TRUE(separate_ops.count("LoRA up"));
  EXPECT_TRUE(separate_ops.count("wkv (prepare, recurrence, group norm, gate)"));
}

// fp16 weights (--dtype f16): against the CPU's f32 on the same random model (whose weights are
// f32), below 16 rows through the fp16-weight kernel, from 16 rows on tensor cores with the
// activations rounded to fp16; the bf16 bound holds (1e-2 of the logits' standard deviation),
// and fp16's three more mantissa bits keep it well inside. A matrix beyond fp16's range is
// refused, naming the tensor.
TEST(CudaF16WeightsTest, F16WeightsStayCloseToF32) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(12);
  auto tensors = MakeRandomRwkv7(spec).value();
  ModelOptions o;
  o.num_slots = 2;
  o.threads = 1;
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  o.weight_type = ModelOptions::WeightType::kF16;
  auto gpu = CudaModel::Create(ViewsOf(tensors), o, 0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->info().weight_dtype, "f16");
  for (const int rows : {7, 1, 40, 1}) {
    std::vector<int32_t> tokens(rows);
    for (int i = 0; i < rows; ++i) tokens[i] = (i * 53 + rows) % 1024;
    StepEntry e;
    e.slot = rows > 8 ? 1 : 0;
    e.inputs = {InputRowsView::Tokens(tokens)};
    e.output = StepOutput::kLogits;
    std::vector<StepResult> cr, gr;
    ASSERT_TRUE(cpu->Step({e}, &cr).ok());
    ASSERT_TRUE((*gpu)->Step({e}, &gr).ok());
    EXPECT_LT(RelErr(cr[0].logits, gr[0].logits), 1e-2) << rows << " rows";
  }
  for (OwnedTensor& t : tensors) {
    if (t.name.find("att.receptance.weight") == std::string::npos) continue;
    ASSERT_EQ(t.dtype, DType::kF32);
    const float big = 1e5f;  // beyond 65504
    std::memcpy(t.bytes.data() + 3 * sizeof(float), &big, sizeof(float));
    break;
  }
  auto refused = CudaModel::Create(ViewsOf(tensors), o, 0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("receptance"), std::string::npos) << refused.status();
}

// f16 states (ModelOptions::StateType::kF16): the GPU rounds a slot to f16 once per step, so it
// tracks the CPU with the slot rounded after each step (tests/engine/f16_state.h) within the f32
// tolerance, over a prefill chunk, embedding rows and 24 decode steps; what it exports is f16
// values as f32, continued on the CPU; what it imports is rounded.
TEST(CudaF16StateTest, RoundsOncePerStepLikeTheEmulation) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RandomModelSpec spec = SmallSpec(13, DType::kF32, 3);
  auto tensors = MakeRandomRwkv7(spec).value();
  ModelOptions o;
  o.num_slots = 2;
  o.threads = 1;
  auto cpu = cpu::CpuModel::Create(ViewsOf(tensors), o).value();
  o.state_type = ModelOptions::StateType::kF16;
  auto created = CudaModel::Create(ViewsOf(tensors), o, 0);
  ASSERT_TRUE(created.ok()) << created.status();
  CudaModel& gpu = **created;
  EXPECT_EQ(gpu.info().state_dtype, "f16");
  o.state_memory_bytes = 10 * cpu->StateBytes();  // f16: twice the sessions in the same memory
  EXPECT_EQ(CudaModel::Create(ViewsOf(tensors), o, 0).value()->num_slots(), 20);

  auto compare = [&](const StepEntry& e, const char* what) {
    std::vector<StepResult> c, g;
    ASSERT_TRUE(cpu->Step({e}, &c).ok());
    ASSERT_TRUE(gpu.Step({e}, &g).ok());
    ASSERT_TRUE(RoundSlotToF16(*cpu, e.slot).ok());
    EXPECT_LT(RelErr(c[0].logits, g[0].logits), kTol) << what;
  };
  std::vector<int32_t> prompt(30);  // with the 2 rows, 32: a prefill in two chunks (wkv.cuh)
  for (int i = 0; i < 30; ++i) prompt[i] = (i * 53 + 7) % 1024;
  std::vector<float> rows(2 * 128);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = std::cos(0.11 * i);
  StepEntry e;
  e.slot = 0;
  e.inputs = {InputRowsView::Embeddings(rows), InputRowsView::Tokens(prompt)};
  e.output = StepOutput::kLogits;
  compare(e, "prefill");
  int32_t token = 3;
  for (int i = 0; i < 24; ++i) {
    e.inputs = {InputRowsView::Tokens(absl::MakeConstSpan(&token, 1))};
    compare(e, "decode");
    token = (token * 31 + 17) % 1024;
  }
  // Export: the f16 values, widened; the CPU continues from them as the GPU does.
  std::vector<float> blob(cpu->config().StateFloats()), back(blob.size());
  ASSERT_TRUE(gpu.ReadSlot(0, absl::MakeSpan(blob)).ok());
  for (float v : blob) ASSERT_EQ(F16ToF32(F32ToF16(v)), v);
  ASSERT_TRUE(cpu->WriteSlot(1, blob).ok());
  ASSERT_TRUE(gpu.CopySlot(0, 1).ok());
  e.slot = 1;
  compare(e, "after export");
  // Offloaded to the cold tier: the f16 values as they are (half the host memory), widened when
  // read.
  auto cold = gpu.OffloadSlot(0);
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ((*cold)->bytes(), cpu->StateBytes() / 2);
  ASSERT_TRUE((*cold)->Read(absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, blob);
  ASSERT_TRUE(gpu.ResetSlot(1).ok());
  ASSERT_TRUE(gpu.RestoreSlot(1, **cold).ok());
  ASSERT_TRUE(gpu.ReadSlot(1, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, blob);
  // Import: an f32 blob is rounded on the way in.
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = 1.0f + 1e-4f * static_cast<float>(i % 7);
  ASSERT_TRUE(gpu.WriteSlot(1, blob).ok());
  ASSERT_TRUE(gpu.ReadSlot(1, absl::MakeSpan(back)).ok());
  for (size_t i = 0; i < blob.size(); ++i) ASSERT_EQ(back[i], F16ToF32(F32ToF16(blob[i]))) << i;
}

}  // namespace
}  // namespace modrwkv::cuda

// The GPU backend against the CPU backend through a long seeded run of random work
// (tests/engine/random_work.h: steps of every mix and output, decode steps of every batch bucket
// again and again, so run eagerly, captured and replayed, and every slot operation between them,
// sessions moved across the two backends), with f32 weights, bf16 weights and f16 states. The
// hand-written cases of cuda_model_check.cc check each path once; this checks them in the orders
// the serving layer produces. Built into `cuda_model_test` (named *_check.cc: see
// wkv_cuda_check.cc). Without a GPU the device cases skip.
#include <string>

#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/cpu_model.h"
#include "engine/cuda/cuda_model.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/model_test_util.h"
#include "tests/engine/random_work.h"

namespace modrwkv::cuda {
namespace {

using ::modrwkv::testing_util::RandomWork;
using ::modrwkv::testing_util::RandomWorkOptions;
using testing_util::HaveDevice;
using testing_util::SmallSpec;

struct RunConfig {
  DType dtype;  // of the random weights; both backends keep them so
  ModelOptions::WeightType weights;
  RandomWorkOptions work;
};

// The bounds: outputs (logits, hidden rows) within what the GPU promises (docs/engine.md, "What
// the GPU promises": f32 weights 1e-3 of the logits' standard deviation, bf16 weights 1.5e-2).
// Slot states, element by element against their own standard deviation: with f32 weights and
// states the same as the logits'; where something is rounded the largest elements move further
// than the logits they lead to: bf16 activations (up to 1.8e-2 in the bf16 run, its logits within
// 4.8e-3), or an f16 state element rounded the other way (one f16 step, 2^-10 of it, carried on
// by the steps after; up to 7.5e-3, the logits within 1.9e-4).
RunConfig Config(const char* name, DType dtype, ModelOptions::WeightType weights, bool f16_states,
                 double tol, double state_tol, uint64_t seed, int operations) {
  RandomWorkOptions w;
  w.name = name;
  w.seed = seed;
  w.operations = operations;
  w.tol = tol;
  w.state_tol = state_tol;
  w.f16_states = f16_states;
  return {dtype, weights, w};
}

class CudaRandomWorkTest : public ::testing::TestWithParam<RunConfig> {};

TEST_P(CudaRandomWorkTest, EveryOutputAndSlotFollowsTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const RunConfig& config = GetParam();
  auto tensors = MakeRandomRwkv7(SmallSpec(config.work.seed, config.dtype));
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ModelOptions o;
  o.num_slots = 6;
  o.threads = 1;
  o.weight_type = config.weights;
  auto cpu = cpu::CpuModel::Create(ViewsOf(*tensors), o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  if (config.work.f16_states) o.state_type = ModelOptions::StateType::kF16;
  auto gpu = CudaModel::Create(ViewsOf(*tensors), o, 0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  RandomWork(config.work, **cpu, **gpu).Run();
}

INSTANTIATE_TEST_SUITE_P(
    Weights, CudaRandomWorkTest,
    ::testing::Values(
        Config("f32", DType::kF32, ModelOptions::WeightType::kF32, false, 1e-3, 1e-3, 101, 64),
        Config("bf16", DType::kBF16, ModelOptions::WeightType::kBF16, false, 1.5e-2, 3e-2, 202, 64),
        Config("f32_f16_states", DType::kF32, ModelOptions::WeightType::kF32, true, 1e-3, 1e-2, 303,
               48)),
    [](const ::testing::TestParamInfo<RunConfig>& info) { return info.param.work.name; });

}  // namespace
}  // namespace modrwkv::cuda

// The adapter chains on a GPU (encoders/cuda/cuda_adapter.h) against the same chains on the CPU
// (AdapterChain::Run), over random weights, for every official preset the GPU runs; the chains it
// does not run are declined and stay on the CPU. f32 on both sides: the results differ only in
// the order of float sums. Without a device, the GPU cases skip.
#include <cmath>
#include <random>
#include <vector>

#include "encoders/adapter/adapter_chain.h"
#include "encoders/adapter/adapter_random.h"
#include "encoders/cuda/cuda_adapter.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cuda/cuda_check.h"
#include "gtest/gtest.h"
#include "tests/encoders/cuda/check_util.h"

namespace modrwkv::encoders::cuda {
namespace {

struct Case {
  const char* name;
  AdapterSpec spec;
  std::vector<int> widths;
};

TEST(CudaAdapterTest, EveryPresetItRunsMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  AdapterSpec norms;  // the remaining ops: a plain LayerNorm, GELU in both forms
  norms.layers = VisionAdapterA().layers;
  norms.layers[1].op = AdapterOp::kGelu;
  norms.layers[1].gelu_tanh = true;
  AdapterLayerSpec ln;
  ln.op = AdapterOp::kLayerNorm;
  ln.weights = "final_norm";
  norms.layers.push_back(ln);
  AdapterLayerSpec erf;
  erf.op = AdapterOp::kGelu;
  norms.layers.push_back(erf);
  const std::vector<Case> cases = {
      {"vision A", VisionAdapterA(), {40, 16}},
      {"vision B with conv", VisionAdapterB(true), {24, 40, 16}},
      {"speech A, padding 2", SpeechAdapterA(2), {32, 32, 16}},
      {"speech A, padding 0", SpeechAdapterA(0), {32, 32, 16}},
      {"conv projector C", ConvProjectorC(), {24, 40, 16}},
      {"norms and GELUs", norms, {40, 16}},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const std::vector<OwnedTensor> w = MakeRandomAdapterWeights(c.spec, 24, c.widths, ++seed);
    auto cpu_chain = AdapterChain::Create(c.spec, ViewsOf(w), "");
    auto gpu_chain = AdapterChain::Create(c.spec, ViewsOf(w), "");
    ASSERT_TRUE(cpu_chain.ok() && gpu_chain.ok()) << c.name << ": " << cpu_chain.status();
    ASSERT_TRUE(CudaAdapter::Supports(**gpu_chain)) << c.name;
    ASSERT_TRUE((*gpu_chain)->UseRunner(CudaAdapter::Factory(0)).ok()) << c.name;
    ASSERT_TRUE((*gpu_chain)->placed()) << c.name;
    // The second row count runs in the scratch grown for the first; one row is too few for
    // some convolutions, and then the GPU chain refuses it as the CPU one does.
    for (const int rows : {57, 20, 1}) {
      std::mt19937 g(seed * 100 + rows);
      std::uniform_real_distribution<float> u(-1, 1);
      std::vector<float> in(static_cast<size_t>(rows) * 24);
      for (float& x : in) x = u(g);
      std::vector<float> want, got;
      const absl::Status cpu = (*cpu_chain)->Run(in, rows, &want, nullptr);
      const absl::Status gpu = (*gpu_chain)->Run(in, rows, &got, nullptr);
      if (!cpu.ok()) {
        EXPECT_EQ(gpu, cpu) << c.name << ", " << rows << " rows";
        continue;
      }
      ASSERT_TRUE(gpu.ok()) << c.name << ": " << gpu;
      ASSERT_EQ(got.size(), want.size()) << c.name;
      EXPECT_LT(RelErr(want, got), 1e-5) << c.name << ", " << rows << " rows";
    }
  }
}

// Chains with a layer the GPU does not run are declined: they stay on the CPU and answer there.
TEST(CudaAdapterTest, ChainsItDoesNotRunStayOnTheCpu) {
  const AdapterSpec shuffle = PixelShuffleProjectorC();
  const std::vector<OwnedTensor> w = MakeRandomAdapterWeights(shuffle, 6, {16}, 3);
  auto chain = AdapterChain::Create(shuffle, ViewsOf(w), "");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_FALSE(CudaAdapter::Supports(**chain));
  ASSERT_TRUE((*chain)->UseRunner(CudaAdapter::Factory(0)).ok());
  EXPECT_FALSE((*chain)->placed());
  EXPECT_EQ(CudaAdapter::Create(**chain, 0).status().code(), absl::StatusCode::kUnimplemented);
  std::vector<float> in(64 * 6, 0.5f), out;
  ASSERT_TRUE((*chain)->Run(in, 64, &out, nullptr).ok());
  EXPECT_EQ(out.size(), 4u * 16);
}

}  // namespace
}  // namespace modrwkv::encoders::cuda

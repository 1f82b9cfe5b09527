// The towers' transformer layers on a GPU (encoders/cuda) against the same layers on the CPU
// (transformer_ops.h's RunPreLnLayer): single stacks of random weights in every variant the
// towers use (activations, causal, bf16 matrices, batches, one token), then whole SigLIP, CLIP,
// Whisper and WavLM encoders with their layers and then their stems placed on the GPU.
// f32 on both sides: the results differ only in the order of float sums. Without a device, the GPU
// cases skip.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "encoders/cuda/cuda_layer_stack.h"
#include "encoders/cuda/cuda_vision_stem.h"
#include "encoders/cuda/cuda_wavlm_layers.h"
#include "encoders/cuda/cuda_wavlm_stem.h"
#include "encoders/cuda/cuda_whisper_stem.h"
#include "encoders/speech/wavlm_config.h"
#include "encoders/speech/wavlm_encoder.h"
#include "encoders/speech/wavlm_random.h"
#include "encoders/speech/whisper_encoder.h"
#include "encoders/speech/whisper_random.h"
#include "encoders/vision/random_vit.h"
#include "encoders/vision/transformer_ops.h"
#include "encoders/vision/vision_tower.h"
#include "encoders/vision/vit_config.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/thread_pool.h"
#include "engine/cuda/cuda_check.h"
#include "gtest/gtest.h"
#include "tests/encoders/cuda/check_util.h"

namespace modrwkv::encoders::cuda {
namespace {

std::vector<float> Uniform(size_t n, std::mt19937* g, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(*g);
  return v;
}

cpu::Matrix RandomMatrix(int out, int in, std::mt19937* g, cpu::WType type) {
  const std::vector<float> w = Uniform(static_cast<size_t>(out) * in, g, 1.0f / std::sqrt(in));
  const TensorView view{"w", DType::kF32, {out, in}, w.data(), w.size() * 4};
  return cpu::MakeMatrix(view, false, type, cpu::Layout::kPanels);
}

EncoderLayerWeights RandomLayer(const EncoderLayerShape& s, std::mt19937* g, cpu::WType type) {
  const int d = s.dim, f = s.ffn;
  EncoderLayerWeights l;
  l.ln1_w = Uniform(d, g, 0.5f);
  for (float& v : l.ln1_w) v += 1.0f;
  l.ln1_b = Uniform(d, g, 0.1f);
  l.ln2_w = Uniform(d, g, 0.5f);
  for (float& v : l.ln2_w) v += 1.0f;
  l.ln2_b = Uniform(d, g, 0.1f);
  l.qkv = RandomMatrix(3 * d, d, g, type);
  l.qkv_b = Uniform(3 * d, g, 0.1f);
  l.out = RandomMatrix(d, d, g, type);
  l.out_b = Uniform(d, g, 0.1f);
  l.fc1 = RandomMatrix(f, d, g, type);
  l.fc1_b = Uniform(f, g, 0.1f);
  l.fc2 = RandomMatrix(d, f, g, type);
  l.fc2_b = Uniform(d, g, 0.1f);
  return l;
}

struct StackCase {
  const char* name;
  EncoderLayerShape shape;
  int batch;
  cpu::WType type;
};

// The case's name in test listings (ctest names a parameterised test by its printed value, which
// would otherwise be the struct's bytes, pointer included: different at every build).
void PrintTo(const StackCase& c, std::ostream* os) {
  for (const char* p = c.name; *p != '\0'; ++p) *os << (std::isalnum(*p) ? *p : '_');
}

class CudaLayerStackTest : public testing::TestWithParam<StackCase> {};

TEST_P(CudaLayerStackTest, MatchesTheCpuLayers) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const StackCase& c = GetParam();
  std::mt19937 g(17);
  std::vector<EncoderLayerWeights> layers;
  for (int i = 0; i < 3; ++i) layers.push_back(RandomLayer(c.shape, &g, c.type));
  const int rows = c.batch * c.shape.tokens;
  const std::vector<float> x0 = Uniform(static_cast<size_t>(rows) * c.shape.dim, &g, 1.0f);

  cpu::ThreadPool pool(2);
  cpu::LinearRunner lin(&pool);
  EncoderScratch scratch(c.shape, rows, pool.size());
  std::vector<float> want = x0;
  for (const EncoderLayerWeights& l : layers) {
    RunPreLnLayer(l, c.shape, c.batch, want.data(), &scratch, &pool, &lin);
  }
  auto stack = CudaLayerStack::Create(layers, c.shape, 0);
  ASSERT_TRUE(stack.ok()) << stack.status();
  std::vector<float> got = x0;
  ASSERT_TRUE((*stack)->Run(got.data(), c.batch).ok());
  EXPECT_LT(RelErr(want, got), 1e-4) << c.name;
  // Again, smaller: the scratch grown for the first run serves it.
  if (c.batch > 1) {
    std::vector<float> one(x0.begin(),
                           x0.begin() + static_cast<int64_t>(c.shape.tokens) * c.shape.dim);
    std::vector<float> one_want = one;
    EncoderScratch s1(c.shape, c.shape.tokens, pool.size());
    for (const EncoderLayerWeights& l : layers) {
      RunPreLnLayer(l, c.shape, 1, one_want.data(), &s1, &pool, &lin);
    }
    ASSERT_TRUE((*stack)->Run(one.data(), 1).ok());
    EXPECT_LT(RelErr(one_want, one), 1e-4) << c.name << ", batch 1 after " << c.batch;
  }
}

EncoderLayerShape Shape(int tokens, int dim, int ffn, int heads, Activation act, bool causal) {
  EncoderLayerShape s;
  s.tokens = tokens;
  s.dim = dim;
  s.ffn = ffn;
  s.heads = heads;
  s.eps = 1e-6f;
  s.act = act;
  s.causal = causal;
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CudaLayerStackTest,
    testing::Values(
        StackCase{"siglip-like", Shape(37, 64, 96, 4, Activation::kGeluTanh, false), 2,
                  cpu::WType::kF32},
        StackCase{"clip-like, bf16", Shape(50, 96, 160, 6, Activation::kQuickGelu, false), 3,
                  cpu::WType::kBF16},
        StackCase{"whisper-like, long", Shape(300, 64, 128, 2, Activation::kGeluErf, false), 1,
                  cpu::WType::kF32},
        StackCase{"causal", Shape(41, 64, 96, 4, Activation::kGeluErf, true), 2, cpu::WType::kF32},
        StackCase{"one token", Shape(1, 32, 48, 2, Activation::kGeluErf, false), 4,
                  cpu::WType::kF32}),
    [](const testing::TestParamInfo<StackCase>& i) { return std::to_string(i.index); });

TEST(CudaLayerStackErrors, BadShapesAndDevicesAreRefused) {
  EncoderLayerShape s = Shape(8, 30, 48, 4, Activation::kGeluErf, false);  // 30 % 4 != 0
  EXPECT_EQ(CudaLayerStack::Create({}, s, 0).status().code(), absl::StatusCode::kInvalidArgument);
  s.dim = 32;
  EXPECT_EQ(CudaLayerStack::Create({}, s, 99).status().code(),
            absl::StatusCode::kFailedPrecondition);
  if (!HaveDevice()) return;
  std::mt19937 g(3);
  std::vector<EncoderLayerWeights> layers;
  layers.push_back(RandomLayer(s, &g, cpu::WType::kF32));
  EncoderLayerShape wider = s;
  wider.ffn = 64;  // the weights say 48
  EXPECT_EQ(CudaLayerStack::Create(layers, wider, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto stack = CudaLayerStack::Create(layers, s, 0);
  ASSERT_TRUE(stack.ok()) << stack.status();
  std::vector<float> x(8 * 32);
  EXPECT_EQ((*stack)->Run(x.data(), 0).code(), absl::StatusCode::kInvalidArgument);
}

// Encoder workers call Run from threads other than the one that built the stack, several at
// once, with different batches: each call must make the device current and have the stream and
// the scratch to itself.
TEST(CudaLayerStackThreads, ConcurrentRunsFromOtherThreadsMatchTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const EncoderLayerShape shape = Shape(29, 64, 96, 4, Activation::kGeluErf, false);
  std::mt19937 g(23);
  std::vector<EncoderLayerWeights> layers;
  for (int i = 0; i < 2; ++i) layers.push_back(RandomLayer(shape, &g, cpu::WType::kF32));
  auto stack = CudaLayerStack::Create(layers, shape, 0);
  ASSERT_TRUE(stack.ok()) << stack.status();
  constexpr int kThreads = 4;
  std::vector<std::vector<float>> want(kThreads), got(kThreads);
  cpu::ThreadPool pool(2);
  cpu::LinearRunner lin(&pool);
  for (int i = 0; i < kThreads; ++i) {
    const int batch = i + 1, rows = batch * shape.tokens;
    want[i] = got[i] = Uniform(static_cast<size_t>(rows) * shape.dim, &g, 1.0f);
    EncoderScratch scratch(shape, rows, pool.size());
    for (const EncoderLayerWeights& l : layers) {
      RunPreLnLayer(l, shape, batch, want[i].data(), &scratch, &pool, &lin);
    }
  }
  std::vector<absl::Status> status(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 3 && status[i].ok(); ++rep) {
        std::vector<float> x = got[i];
        status[i] = (*stack)->Run(x.data(), i + 1);
        if (rep == 2) got[i] = std::move(x);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i];
    EXPECT_LT(RelErr(want[i], got[i]), 1e-4) << "thread " << i;
  }
}

// Whole towers: the same encoder on the CPU, with its layers on the GPU, and with its stem (the
// patch embedding, class token, positions, CLIP's pre-LayerNorm) on the GPU too.
TEST(CudaTowerTest, VisionTowersWithTheirLayersAndStemOnTheGpuMatchTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  for (const char* json :
       {R"({"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32,
            "patch_size": 8})",
        R"({"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 32,
            "patch_size": 8})"}) {
    auto config = ParseVitConfig(json);
    ASSERT_TRUE(config.ok()) << config.status();
    const std::vector<OwnedTensor> weights = MakeRandomVitWeights(*config, 5);
    auto cpu_tower = VisionTower::Create(*config, ViewsOf(weights), "", {});
    auto layers_tower = VisionTower::Create(*config, ViewsOf(weights), "", {});
    auto gpu_tower = VisionTower::Create(*config, ViewsOf(weights), "", {});
    ASSERT_TRUE(cpu_tower.ok() && layers_tower.ok() && gpu_tower.ok()) << gpu_tower.status();
    ASSERT_TRUE((*layers_tower)->UseLayerStack(CudaLayerStack::Factory(0)).ok());
    ASSERT_TRUE((*gpu_tower)->UseLayerStack(CudaLayerStack::Factory(0)).ok());
    const absl::Status stem = (*gpu_tower)->UseStem(CudaVisionStem::Factory(0));
    ASSERT_TRUE(stem.ok()) << stem;
    cpu::ThreadPool pool(2);
    for (const int batch : {2, 1}) {  // the second run in the scratch grown for the first
      const std::vector<float> px = RandomPixels(*config, batch, 5 + batch);
      const size_t n =
          static_cast<size_t>(batch) * (*cpu_tower)->output_rows() * config->hidden_size;
      std::vector<float> want(n), layers(n), got(n);
      ASSERT_TRUE((*cpu_tower)->Forward(px, batch, absl::MakeSpan(want), &pool).ok());
      ASSERT_TRUE((*layers_tower)->Forward(px, batch, absl::MakeSpan(layers), &pool).ok());
      ASSERT_TRUE((*gpu_tower)->Forward(px, batch, absl::MakeSpan(got), &pool).ok());
      EXPECT_LT(RelErr(want, layers), 1e-4) << json << ", layers, batch " << batch;
      EXPECT_LT(RelErr(want, got), 1e-4) << json << ", stem and layers, batch " << batch;
    }
    EXPECT_EQ(CudaVisionStem::Create(VisionStemWeights(), *config, 0).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// A Whisper encoder of 2 layers, width 64, 16 mel bins, 100 positions.
WhisperConfig SmallWhisperConfig() {
  WhisperConfig config;
  config.num_mel_bins = 16;
  config.d_model = 64;
  config.encoder_layers = 2;
  config.encoder_attention_heads = 4;
  config.encoder_ffn_dim = 128;
  config.max_source_positions = 100;
  return config;
}

TEST(CudaTowerTest, WhisperWithItsLayersAndStemOnTheGpuMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  const WhisperConfig config = SmallWhisperConfig();
  const std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(config, 9);
  auto cpu_enc = WhisperEncoder::Create(config, ViewsOf(weights), "");
  auto layers_enc = WhisperEncoder::Create(config, ViewsOf(weights), "");
  auto gpu_enc = WhisperEncoder::Create(config, ViewsOf(weights), "");
  ASSERT_TRUE(cpu_enc.ok() && layers_enc.ok() && gpu_enc.ok()) << gpu_enc.status();
  ASSERT_TRUE((*layers_enc)->UseLayerStack(CudaLayerStack::Factory(0)).ok());
  ASSERT_TRUE((*gpu_enc)->UseLayerStack(CudaLayerStack::Factory(0)).ok());
  const absl::Status stem = (*gpu_enc)->UseStem(CudaWhisperStem::Factory(0));
  ASSERT_TRUE(stem.ok()) << stem;
  cpu::ThreadPool pool(2);
  for (const int batch : {2, 1}) {  // the second run in the scratch grown for the first
    const std::vector<float> mel = RandomMel(config, batch, 9 + batch);
    const size_t n = static_cast<size_t>(batch) * config.frames() * config.d_model;
    std::vector<float> want(n), layers(n), got(n);
    ASSERT_TRUE((*cpu_enc)->Forward(mel, batch, absl::MakeSpan(want), &pool).ok());
    ASSERT_TRUE((*layers_enc)->Forward(mel, batch, absl::MakeSpan(layers), &pool).ok());
    ASSERT_TRUE((*gpu_enc)->Forward(mel, batch, absl::MakeSpan(got), &pool).ok());
    EXPECT_LT(RelErr(want, layers), 1e-4) << "layers, batch " << batch;
    EXPECT_LT(RelErr(want, got), 1e-4) << "stem and layers, batch " << batch;
  }
  WhisperConfig other = config;
  other.num_mel_bins = 8;
  EXPECT_EQ(CudaWhisperStem::Create(WhisperStemWeights(), other, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// With TF32 products (EncoderMath::kTf32; the emulator's cuBLAS rounds f32 inputs as tensor cores
// do) a tower and Whisper stay near the CPU, and differ from the f32 products: the mode reached
// cuBLAS. The tolerance is the TF32 rounding's own size (2^-11 relative per input) carried
// through the layers, with room.
TEST(CudaTowerTest, Tf32ProductsStayNearTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  cpu::ThreadPool pool(2);
  auto check = [](const std::vector<float>& cpu, const std::vector<float>& f32,
                  const std::vector<float>& tf32, const char* what) {
    EXPECT_LT(RelErr(cpu, f32), 1e-4) << what;
    EXPECT_LT(RelErr(cpu, tf32), 3e-3) << what;
    EXPECT_GT(RelErr(f32, tf32), 1e-5) << what << ": no sign of TF32";
    RecordProperty(what, absl::StrFormat("%.3g", RelErr(cpu, tf32)));
  };
  {
    auto config = ParseVitConfig(R"({"model_type": "siglip_vision_model", "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 32, "patch_size": 8})");
    ASSERT_TRUE(config.ok()) << config.status();
    const std::vector<OwnedTensor> weights = MakeRandomVitWeights(*config, 8);
    std::vector<std::unique_ptr<VisionTower>> towers;
    for (int i = 0; i < 3; ++i) {
      auto t = VisionTower::Create(*config, ViewsOf(weights), "", {});
      ASSERT_TRUE(t.ok()) << t.status();
      towers.push_back(*std::move(t));
    }
    for (int i = 1; i < 3; ++i) {
      const EncoderMath math = i == 1 ? EncoderMath::kF32 : EncoderMath::kTf32;
      ASSERT_TRUE(towers[i]->UseLayerStack(CudaLayerStack::Factory(0, math)).ok());
      ASSERT_TRUE(towers[i]->UseStem(CudaVisionStem::Factory(0, math)).ok());
    }
    const std::vector<float> px = RandomPixels(*config, 2, 8);
    std::vector<std::vector<float>> out(
        3, std::vector<float>(2 * towers[0]->output_rows() * config->hidden_size));
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(towers[i]->Forward(px, 2, absl::MakeSpan(out[i]), &pool).ok());
    }
    check(out[0], out[1], out[2], "siglip");
  }
  const WhisperConfig config = SmallWhisperConfig();
  const std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(config, 11);
  std::vector<std::unique_ptr<WhisperEncoder>> encoders;
  for (int i = 0; i < 3; ++i) {
    auto e = WhisperEncoder::Create(config, ViewsOf(weights), "");
    ASSERT_TRUE(e.ok()) << e.status();
    encoders.push_back(*std::move(e));
  }
  for (int i = 1; i < 3; ++i) {
    const EncoderMath math = i == 1 ? EncoderMath::kF32 : EncoderMath::kTf32;
    ASSERT_TRUE(encoders[i]->UseLayerStack(CudaLayerStack::Factory(0, math)).ok());
    ASSERT_TRUE(encoders[i]->UseStem(CudaWhisperStem::Factory(0, math)).ok());
  }
  const std::vector<float> mel = RandomMel(config, 1, 12);
  std::vector<std::vector<float>> out(
      3, std::vector<float>(static_cast<size_t>(config.frames()) * config.d_model));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(encoders[i]->Forward(mel, 1, absl::MakeSpan(out[i]), &pool).ok());
  }
  check(out[0], out[1], out[2], "whisper");
}

// A LayerStackRunner forwarding to a CudaLayerStack: the stem runners do not recognise it, so
// they copy their rows through the host to it, as before the handoff.
class ForwardingStack final : public LayerStackRunner {
 public:
  explicit ForwardingStack(std::unique_ptr<CudaLayerStack> to) : to_(std::move(to)) {}
  absl::Status Run(float* x, int batch) const override { return to_->Run(x, batch); }

 private:
  std::unique_ptr<CudaLayerStack> to_;
};

// Layer-stack factories on device 0 that keep a pointer to the stack they build (`made`), as it
// is (the stems hand it their rows on the device) or behind ForwardingStack (they do not).
LayerStackFactory RecordingFactory(const CudaLayerStack** made, bool forwarding) {
  return [made, forwarding](
             absl::Span<const EncoderLayerWeights> layers,
             const EncoderLayerShape& shape) -> absl::StatusOr<std::unique_ptr<LayerStackRunner>> {
    auto stack = CudaLayerStack::Create(layers, shape, 0);
    if (!stack.ok()) return stack.status();
    *made = stack->get();
    if (forwarding) return std::make_unique<ForwardingStack>(*std::move(stack));
    return std::unique_ptr<LayerStackRunner>(*std::move(stack));
  };
}

// With the stem and the layers on one GPU, the stem's rows go to the layers there (RunThrough,
// CudaLayerStack::RunFromDevice) instead of down to the host and up again: the same bits as
// through the host, one handoff per encode.
TEST(CudaTowerTest, StemsHandTheirRowsToTheLayersOnTheDevice) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  cpu::ThreadPool pool(1);
  auto check = [&](auto& direct, auto& via_host, const CudaLayerStack* direct_stack,
                   const CudaLayerStack* host_stack, const auto& input, int batch, size_t n,
                   int runs) {
    std::vector<float> got(n), want(n);
    ASSERT_TRUE(direct.Forward(input, batch, absl::MakeSpan(got), &pool).ok());
    ASSERT_TRUE(via_host.Forward(input, batch, absl::MakeSpan(want), &pool).ok());
    EXPECT_EQ(got, want) << "batch " << batch;
    EXPECT_EQ(direct_stack->device_handoffs(), runs);
    EXPECT_EQ(host_stack->device_handoffs(), 0);
  };
  {
    auto config = ParseVitConfig(R"({"model_type": "clip_vision_model", "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 32, "patch_size": 8})");
    ASSERT_TRUE(config.ok()) << config.status();
    const std::vector<OwnedTensor> weights = MakeRandomVitWeights(*config, 6);
    auto direct = VisionTower::Create(*config, ViewsOf(weights), "", {});
    auto via_host = VisionTower::Create(*config, ViewsOf(weights), "", {});
    ASSERT_TRUE(direct.ok() && via_host.ok());
    const CudaLayerStack *direct_stack = nullptr, *host_stack = nullptr;
    ASSERT_TRUE((*direct)->UseLayerStack(RecordingFactory(&direct_stack, false)).ok());
    ASSERT_TRUE((*via_host)->UseLayerStack(RecordingFactory(&host_stack, true)).ok());
    ASSERT_TRUE((*direct)->UseStem(CudaVisionStem::Factory(0)).ok());
    ASSERT_TRUE((*via_host)->UseStem(CudaVisionStem::Factory(0)).ok());
    for (const int batch : {2, 1}) {
      const size_t n = static_cast<size_t>(batch) * (*direct)->output_rows() * 64;
      check(**direct, **via_host, direct_stack, host_stack, RandomPixels(*config, batch, batch),
            batch, n, batch == 2 ? 1 : 2);
    }
  }
  const WhisperConfig config = SmallWhisperConfig();
  const std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(config, 10);
  auto direct = WhisperEncoder::Create(config, ViewsOf(weights), "");
  auto via_host = WhisperEncoder::Create(config, ViewsOf(weights), "");
  ASSERT_TRUE(direct.ok() && via_host.ok());
  const CudaLayerStack *direct_stack = nullptr, *host_stack = nullptr;
  ASSERT_TRUE((*direct)->UseLayerStack(RecordingFactory(&direct_stack, false)).ok());
  ASSERT_TRUE((*via_host)->UseLayerStack(RecordingFactory(&host_stack, true)).ok());
  ASSERT_TRUE((*direct)->UseStem(CudaWhisperStem::Factory(0)).ok());
  ASSERT_TRUE((*via_host)->UseStem(CudaWhisperStem::Factory(0)).ok());
  const size_t n = static_cast<size_t>(config.frames()) * config.d_model;
  check(**direct, **via_host, direct_stack, host_stack, RandomMel(config, 1, 3), 1, n, 1);
}

// As ForwardingStack, for WavLM's layers.
class ForwardingWavlmLayers final : public WavlmLayerRunner {
 public:
  explicit ForwardingWavlmLayers(std::unique_ptr<CudaWavlmLayers> to) : to_(std::move(to)) {}
  absl::Status Run(float* x, int batch, int frames, const float* rel) const override {
    return to_->Run(x, batch, frames, rel);
  }

 private:
  std::unique_ptr<CudaWavlmLayers> to_;
};

// As RecordingFactory, for WavLM's layers.
WavlmLayerFactory RecordingWavlmFactory(const CudaWavlmLayers** made, bool forwarding) {
  return [made, forwarding](
             absl::Span<const WavlmLayerWeights> layers,
             const WavlmConfig& config) -> absl::StatusOr<std::unique_ptr<WavlmLayerRunner>> {
    auto runner = CudaWavlmLayers::Create(layers, config, 0);
    if (!runner.ok()) return runner.status();
    *made = runner->get();
    if (forwarding) return std::make_unique<ForwardingWavlmLayers>(*std::move(runner));
    return std::unique_ptr<WavlmLayerRunner>(*std::move(runner));
  };
}

// WavLM's stem hands its rows to the layers on the device too, in both layouts (post-LN: the
// encoder's LayerNorm between them runs in the stem; pre-LN: it follows the layers, on the CPU).
TEST(CudaTowerTest, WavlmStemHandsItsRowsToTheLayersOnTheDevice) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  cpu::ThreadPool pool(1);
  for (const bool stable : {false, true}) {
    auto config = ParseWavlmConfig(absl::StrFormat(
        R"({"model_type": "wavlm", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96,
            "conv_dim": [32, 32, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 4, "num_buckets": 32, "max_bucket_distance": 40,
            "do_stable_layer_norm": %s, "feat_extract_norm": "%s", "conv_bias": %s})",
        stable ? "true" : "false", stable ? "layer" : "group", stable ? "true" : "false"));
    ASSERT_TRUE(config.ok()) << config.status();
    const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, 7);
    auto direct = WavlmEncoder::Create(*config, ViewsOf(weights), "");
    auto via_host = WavlmEncoder::Create(*config, ViewsOf(weights), "");
    ASSERT_TRUE(direct.ok() && via_host.ok());
    const CudaWavlmLayers *direct_layers = nullptr, *host_layers = nullptr;
    ASSERT_TRUE((*direct)->UseLayerStack(RecordingWavlmFactory(&direct_layers, false)).ok());
    ASSERT_TRUE((*via_host)->UseLayerStack(RecordingWavlmFactory(&host_layers, true)).ok());
    ASSERT_TRUE((*direct)->UseStem(CudaWavlmStem::Factory(0)).ok());
    ASSERT_TRUE((*via_host)->UseStem(CudaWavlmStem::Factory(0)).ok());
    const int batch = 2, samples = 16000;  // two clips of a second
    const std::vector<float> audio = RandomWavlmAudio(batch, samples, 5);
    const size_t n = static_cast<size_t>(batch) * (*direct)->OutputFrames(samples) * 64;
    std::vector<float> got(n), want(n);
    ASSERT_TRUE((*direct)->Forward(audio, batch, samples, absl::MakeSpan(got), &pool).ok());
    ASSERT_TRUE((*via_host)->Forward(audio, batch, samples, absl::MakeSpan(want), &pool).ok());
    const char* layout = stable ? "pre-LN" : "post-LN";
    EXPECT_EQ(got, want) << layout;
    EXPECT_EQ(direct_layers->device_handoffs(), 1) << layout;
    EXPECT_EQ(host_layers->device_handoffs(), 0) << layout;
  }
}

// WavLM in both layouts: post-LN (base, base+: a GroupNorm on the first convolution, no conv
// bias) and pre-LN (large: do_stable_layer_norm, a LayerNorm on every convolution, conv bias),
// with the gated relative position bias; the layers on the GPU, then the stem too; two clip
// lengths through one runner (its scratch grows) and an odd kernel for the positional
// convolution (PyTorch drops no output then).
TEST(CudaTowerTest, WavlmWithItsLayersAndStemOnTheGpuMatchesTheCpu) {
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device";
  for (const bool stable : {false, true}) {
    auto config = ParseWavlmConfig(absl::StrFormat(
        R"({"model_type": "wavlm", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 96,
            "conv_dim": [32, 32, 32, 32, 32, 32, 32], "num_conv_pos_embeddings": %d,
            "num_conv_pos_embedding_groups": 4, "num_buckets": 32, "max_bucket_distance": 40,
            "do_stable_layer_norm": %s, "feat_extract_norm": "%s", "conv_bias": %s})",
        stable ? 15 : 16, stable ? "true" : "false", stable ? "layer" : "group",
        stable ? "true" : "false"));
    ASSERT_TRUE(config.ok()) << config.status();
    const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(*config, 4);
    auto cpu_enc = WavlmEncoder::Create(*config, ViewsOf(weights), "");
    auto layers_enc = WavlmEncoder::Create(*config, ViewsOf(weights), "");
    auto gpu_enc = WavlmEncoder::Create(*config, ViewsOf(weights), "");
    ASSERT_TRUE(cpu_enc.ok() && layers_enc.ok() && gpu_enc.ok()) << gpu_enc.status();
    ASSERT_TRUE((*layers_enc)->UseLayerStack(CudaWavlmLayers::Factory(0)).ok());
    ASSERT_TRUE((*gpu_enc)->UseLayerStack(CudaWavlmLayers::Factory(0)).ok());
    const absl::Status stem = (*gpu_enc)->UseStem(CudaWavlmStem::Factory(0));
    ASSERT_TRUE(stem.ok()) << stem;
    EXPECT_TRUE((*gpu_enc)->stem_placed());
    cpu::ThreadPool pool(2);
    for (const auto& [batch, samples] : {std::pair{2, 16000}, std::pair{1, 24000}}) {
      const std::vector<float> audio = RandomWavlmAudio(batch, samples, 4);
      const size_t n = static_cast<size_t>(batch) * (*cpu_enc)->OutputFrames(samples) * 64;
      std::vector<float> want(n), layers(n), got(n);
      ASSERT_TRUE((*cpu_enc)->Forward(audio, batch, samples, absl::MakeSpan(want), &pool).ok());
      ASSERT_TRUE(
          (*layers_enc)->Forward(audio, batch, samples, absl::MakeSpan(layers), &pool).ok());
      ASSERT_TRUE((*gpu_enc)->Forward(audio, batch, samples, absl::MakeSpan(got), &pool).ok());
      const char* layout = stable ? "pre-LN" : "post-LN";
      EXPECT_LT(RelErr(want, layers), 1e-4) << layout << ", layers, " << samples;
      EXPECT_LT(RelErr(want, got), 1e-4) << layout << ", stem and layers, " << samples;
    }
  }
}

// The stem's runner checks what it is given.
TEST(CudaTowerTest, WavlmStemRefusesWeightsThatDoNotMatchItsConfig) {
  auto config = ParseWavlmConfig(R"({"model_type": "wavlm", "hidden_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 96,
      "conv_dim": [32, 32], "conv_kernel": [10, 3], "conv_stride": [5, 2],
      "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(CudaWavlmStem::Create(WavlmStemWeights(), *config, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modrwkv::encoders::cuda

// cuda_encoder_bench: the towers' forward passes with their transformer layers on the GPU
// (encoders/cuda) against the same towers wholly on this machine's CPU threads, on random weights
// of the real shapes: SigLIP2-base/16 at 384 px (12 layers of 768, 576 rows per image), the
// Whisper-small encoder (12 layers of 768, 1500 rows per 30 s clip) and WavLM base+ (12 layers
// of 768, 1499 rows per 30 s clip; batch 1); each again with its stem (the patch embedding, the
// convolutions) on the GPU too; the Timer time-series encoder (timer-base-84m's shape, whole);
// then a 1.5B model's adapters (generation A, vision and speech).
// Prints ms per item both ways and the GPU's share: what its layers reach against the measured
// f32 SGEMM rate (they run f32, without TF32; the rows marked TF32 with --encoder-tf32's TF32
// tensor-core products, against the same f32 rate).
//
//   cuda_encoder_bench [--batches=1,4] [--threads=N (default: every core)] [--device=0]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "encoders/adapter/adapter_chain.h"
#include "encoders/adapter/adapter_random.h"
#include "encoders/cuda/cuda_adapter.h"
#include "encoders/cuda/cuda_layer_stack.h"
#include "encoders/cuda/cuda_timer.h"
#include "encoders/cuda/cuda_vision_stem.h"
#include "encoders/cuda/cuda_wavlm_layers.h"
#include "encoders/cuda/cuda_wavlm_stem.h"
#include "encoders/cuda/cuda_whisper_stem.h"
#include "encoders/speech/wavlm_config.h"
#include "encoders/speech/wavlm_encoder.h"
#include "encoders/speech/wavlm_random.h"
#include "encoders/speech/whisper_encoder.h"
#include "encoders/speech/whisper_random.h"
#include "encoders/timeseries/timer.h"
#include "encoders/vision/random_vit.h"
#include "encoders/vision/vision_tower.h"
#include "encoders/vision/vit_config.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/thread_pool.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"

namespace modrwkv::encoders::cuda {
namespace {

using Clock = std::chrono::steady_clock;
constexpr EncoderMath kTf32 = EncoderMath::kTf32;
double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// cuBLAS SGEMM at 4096^3 (no TF32), FLOP/s.
absl::StatusOr<double> SgemmRate() {
  using namespace modrwkv::cuda;
  MODRWKV_ASSIGN_OR_RETURN(const CublasApi* blas, Cublas());
  cublasHandle_t h = nullptr;
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->Create(&h));
  const int n = 4096;
  MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> a, AllocDevice<float>(size_t{n} * n));
  MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> b, AllocDevice<float>(size_t{n} * n));
  MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> c, AllocDevice<float>(size_t{n} * n));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemset(a.get(), 0, size_t{n} * n * 4));
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemset(b.get(), 0, size_t{n} * n * 4));
  const float one = 1, zero = 0;
  auto run = [&]() {
    return blas->Sgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.get(), n, b.get(), n, &zero,
                       c.get(), n);
  };
  MODRWKV_CUBLAS_RETURN_IF_ERROR(run());
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  const int reps = 10;
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) MODRWKV_CUBLAS_RETURN_IF_ERROR(run());
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  const double s = Seconds(t0);
  blas->Destroy(h);
  return 2.0 * n * n * n * reps / s;
}

// Best of `reps` timed calls after one warm-up.
template <typename Fn>
absl::StatusOr<double> Best(int reps, Fn fn) {
  MODRWKV_RETURN_IF_ERROR(fn());
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    MODRWKV_RETURN_IF_ERROR(fn());
    best = std::min(best, Seconds(t0));
  }
  return best;
}

void Row(const char* tower, int batch, double cpu_s, double gpu_s, double layer_flops,
         double sgemm) {
  std::printf(
      "| %s | %d | %.1f | %.2f | %.0fx | %.1f TFLOP/s = %.0f%% of SGEMM (whole forward) |\n", tower,
      batch, cpu_s / batch * 1e3, gpu_s / batch * 1e3, cpu_s / gpu_s, layer_flops / gpu_s / 1e12,
      100 * layer_flops / gpu_s / sgemm);
}

absl::Status Main(const std::vector<int>& batches, int threads, int device) {
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  MODRWKV_ASSIGN_OR_RETURN(const double sgemm, SgemmRate());
  cpu::ThreadPool pool(threads);
  std::printf("f32 SGEMM %.1f TFLOP/s; CPU side %d threads\n\n", sgemm / 1e12, threads);
  std::printf(
      "| encoder | batch | CPU ms per item | GPU layers ms per item | speed-up | GPU layers |\n"
      "|---|---|---|---|---|---|\n");
  {
    MODRWKV_ASSIGN_OR_RETURN(VitConfig config, ParseVitConfig(R"({"model_type": "siglip",
        "vision_config": {"image_size": 384, "patch_size": 16}})"));
    const std::vector<OwnedTensor> w = MakeRandomVitWeights(config, 1);
    MODRWKV_ASSIGN_OR_RETURN(auto on_cpu, VisionTower::Create(config, ViewsOf(w), "", {}));
    MODRWKV_ASSIGN_OR_RETURN(auto on_gpu, VisionTower::Create(config, ViewsOf(w), "", {}));
    MODRWKV_RETURN_IF_ERROR(on_gpu->UseLayerStack(CudaLayerStack::Factory(device)));
    // What the model bundle places on a GPU: the layers and the stem (the patch embedding).
    MODRWKV_ASSIGN_OR_RETURN(auto all_gpu, VisionTower::Create(config, ViewsOf(w), "", {}));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseLayerStack(CudaLayerStack::Factory(device)));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseStem(CudaVisionStem::Factory(device)));
    // The same with TF32 products (--encoder-tf32).
    MODRWKV_ASSIGN_OR_RETURN(auto tf32, VisionTower::Create(config, ViewsOf(w), "", {}));
    MODRWKV_RETURN_IF_ERROR(tf32->UseLayerStack(CudaLayerStack::Factory(device, kTf32)));
    MODRWKV_RETURN_IF_ERROR(tf32->UseStem(CudaVisionStem::Factory(device, kTf32)));
    for (const int b : batches) {
      const std::vector<float> px = RandomPixels(config, b, 1);
      std::vector<float> out(static_cast<size_t>(b) * on_cpu->output_rows() * config.hidden_size);
      MODRWKV_ASSIGN_OR_RETURN(const double c, Best(2, [&] {
                                 return on_cpu->Forward(px, b, absl::MakeSpan(out), &pool);
                               }));
      MODRWKV_ASSIGN_OR_RETURN(const double g, Best(5, [&] {
                                 return on_gpu->Forward(px, b, absl::MakeSpan(out), &pool);
                               }));
      Row("SigLIP2-base/16@384", b, c, g, on_cpu->FlopsPerImage() * b, sgemm);
      MODRWKV_ASSIGN_OR_RETURN(const double a, Best(5, [&] {
                                 return all_gpu->Forward(px, b, absl::MakeSpan(out), &pool);
                               }));
      Row("SigLIP2-base/16@384, stem on the GPU too", b, c, a, on_cpu->FlopsPerImage() * b, sgemm);
      MODRWKV_ASSIGN_OR_RETURN(const double t, Best(5, [&] {
                                 return tf32->Forward(px, b, absl::MakeSpan(out), &pool);
                               }));
      Row("SigLIP2-base/16@384, stem on the GPU too, TF32", b, c, t, on_cpu->FlopsPerImage() * b,
          sgemm);
    }
  }
  {
    WhisperConfig config;  // whisper-small's encoder
    config.d_model = 768;
    config.encoder_layers = 12;
    config.encoder_attention_heads = 12;
    config.encoder_ffn_dim = 3072;
    const std::vector<OwnedTensor> w = MakeRandomWhisperWeights(config, 1);
    MODRWKV_ASSIGN_OR_RETURN(auto on_cpu, WhisperEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_ASSIGN_OR_RETURN(auto on_gpu, WhisperEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(on_gpu->UseLayerStack(CudaLayerStack::Factory(device)));
    // What the model bundle places on a GPU: the layers and the stem (both convolutions).
    MODRWKV_ASSIGN_OR_RETURN(auto all_gpu, WhisperEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseLayerStack(CudaLayerStack::Factory(device)));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseStem(CudaWhisperStem::Factory(device)));
    MODRWKV_ASSIGN_OR_RETURN(auto tf32, WhisperEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(tf32->UseLayerStack(CudaLayerStack::Factory(device, kTf32)));
    MODRWKV_RETURN_IF_ERROR(tf32->UseStem(CudaWhisperStem::Factory(device, kTf32)));
    for (const int b : batches) {
      const std::vector<float> mel = RandomMel(config, b, 1);
      std::vector<float> out(static_cast<size_t>(b) * config.frames() * config.d_model);
      MODRWKV_ASSIGN_OR_RETURN(const double c, Best(1, [&] {
                                 return on_cpu->Forward(mel, b, absl::MakeSpan(out), &pool);
                               }));
      MODRWKV_ASSIGN_OR_RETURN(const double g, Best(3, [&] {
                                 return on_gpu->Forward(mel, b, absl::MakeSpan(out), &pool);
                               }));
      Row("Whisper-small encoder (30 s)", b, c, g, on_cpu->FlopsPerClip() * b, sgemm);
      MODRWKV_ASSIGN_OR_RETURN(const double a, Best(3, [&] {
                                 return all_gpu->Forward(mel, b, absl::MakeSpan(out), &pool);
                               }));
      Row("Whisper-small encoder (30 s), stem on the GPU too", b, c, a, on_cpu->FlopsPerClip() * b,
          sgemm);
      MODRWKV_ASSIGN_OR_RETURN(const double t, Best(3, [&] {
                                 return tf32->Forward(mel, b, absl::MakeSpan(out), &pool);
                               }));
      Row("Whisper-small encoder (30 s), stem on the GPU too, TF32", b, c, t,
          on_cpu->FlopsPerClip() * b, sgemm);
    }
  }
  {
    MODRWKV_ASSIGN_OR_RETURN(WavlmConfig config, WavlmConfigForShape("base+"));
    const std::vector<OwnedTensor> w = MakeRandomWavlmWeights(config, 1);
    MODRWKV_ASSIGN_OR_RETURN(auto on_cpu, WavlmEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_ASSIGN_OR_RETURN(auto on_gpu, WavlmEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(on_gpu->UseLayerStack(CudaWavlmLayers::Factory(device)));
    // What the model bundle places on a GPU: the layers and the stem (convolutions, projection).
    MODRWKV_ASSIGN_OR_RETURN(auto all_gpu, WavlmEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseLayerStack(CudaWavlmLayers::Factory(device)));
    MODRWKV_RETURN_IF_ERROR(all_gpu->UseStem(CudaWavlmStem::Factory(device)));
    MODRWKV_ASSIGN_OR_RETURN(auto tf32, WavlmEncoder::Create(config, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(tf32->UseLayerStack(CudaWavlmLayers::Factory(device, kTf32)));
    MODRWKV_RETURN_IF_ERROR(tf32->UseStem(CudaWavlmStem::Factory(device, kTf32)));
    const int samples = 30 * 16000;
    const std::vector<float> audio = RandomWavlmAudio(1, samples, 1);
    std::vector<float> out(static_cast<size_t>(on_cpu->OutputFrames(samples)) * config.hidden_size);
    MODRWKV_ASSIGN_OR_RETURN(
        const double c,
        Best(1, [&] { return on_cpu->Forward(audio, 1, samples, absl::MakeSpan(out), &pool); }));
    MODRWKV_ASSIGN_OR_RETURN(
        const double g,
        Best(3, [&] { return on_gpu->Forward(audio, 1, samples, absl::MakeSpan(out), &pool); }));
    Row("WavLM base+ (30 s)", 1, c, g, on_cpu->FlopsPerClip(samples), sgemm);
    MODRWKV_ASSIGN_OR_RETURN(
        const double a,
        Best(3, [&] { return all_gpu->Forward(audio, 1, samples, absl::MakeSpan(out), &pool); }));
    Row("WavLM base+ (30 s), stem on the GPU too", 1, c, a, on_cpu->FlopsPerClip(samples), sgemm);
    MODRWKV_ASSIGN_OR_RETURN(const double t, Best(3, [&] {
                               return tf32->Forward(audio, 1, samples, absl::MakeSpan(out), &pool);
                             }));
    Row("WavLM base+ (30 s), stem on the GPU too, TF32", 1, c, t, on_cpu->FlopsPerClip(samples),
        sgemm);
  }
  {
    // The Timer time-series encoder at timer-base-84m's shape (patch 96, width 1024, 8 layers of
    // 8 heads, FFN 2048; f32), whole on the GPU: one channel of 512, 4096 and 32768 steps.
    constexpr int kPatch = 96, kDim = 1024, kLayers = 8, kHeads = 8, kFfn = 2048;
    RandomTensors t(1);
    t.Add("embed_layer.emb.weight", {kDim, kPatch}, -FanInBound(kPatch), FanInBound(kPatch));
    for (int i = 0; i < kLayers; ++i) {
      const std::string l = "layers." + std::to_string(i) + ".";
      for (const char* w : {"q_proj", "k_proj", "v_proj"}) {
        t.Linear(l + "self_attn." + w, kDim, kDim);
      }
      t.Linear(l + "self_attn.o_proj", kDim, kDim, /*bias=*/false);
      t.Linear(l + "ffn_layer.gate_proj", kFfn, kDim, false);
      t.Linear(l + "ffn_layer.up_proj", kFfn, kDim, false);
      t.Linear(l + "ffn_layer.down_proj", kDim, kFfn, false);
      t.LayerNorm(l + "norm1", kDim);
      t.LayerNorm(l + "norm2", kDim);
    }
    t.LayerNorm("norm", kDim);
    const std::vector<OwnedTensor> w = t.Take();
    MODRWKV_ASSIGN_OR_RETURN(auto on_cpu, TimerEncoder::Load(ViewsOf(w), "", kHeads, 10000.0f));
    MODRWKV_ASSIGN_OR_RETURN(auto on_gpu, TimerEncoder::Load(ViewsOf(w), "", kHeads, 10000.0f));
    MODRWKV_RETURN_IF_ERROR(on_gpu->UseRunner(CudaTimer::Factory(device)));
    MODRWKV_ASSIGN_OR_RETURN(auto tf32, TimerEncoder::Load(ViewsOf(w), "", kHeads, 10000.0f));
    MODRWKV_RETURN_IF_ERROR(tf32->UseRunner(CudaTimer::Factory(device, kTf32)));
    for (const int steps : {512, 4096, 32768}) {
      const int r = steps / kPatch;
      // Per row: the embedding and every projection, and the attention's two products over all r
      // keys (the causal half is computed and discarded, as on the CPU).
      const double flops = 2.0 * r *
                           (double{kPatch} * kDim +
                            kLayers * (4.0 * kDim * kDim + 3.0 * kFfn * kDim + 2.0 * r * kDim));
      const std::vector<float> patches(static_cast<size_t>(r) * kPatch, 0.25f);
      MODRWKV_ASSIGN_OR_RETURN(const double c,
                               Best(1, [&] { return on_cpu->Encode(patches, r, &pool).status(); }));
      MODRWKV_ASSIGN_OR_RETURN(const double g,
                               Best(5, [&] { return on_gpu->Encode(patches, r, &pool).status(); }));
      const std::string name = "Timer (timer-base-84m), " + std::to_string(steps) + " steps (" +
                               std::to_string(r) + " patches), whole on the GPU";
      Row(name.c_str(), 1, c, g, flops, sgemm);
      MODRWKV_ASSIGN_OR_RETURN(const double t,
                               Best(5, [&] { return tf32->Encode(patches, r, &pool).status(); }));
      Row((name + ", TF32").c_str(), 1, c, t, flops, sgemm);
    }
  }
  // The adapters of a 1.5B model (C = 2048): generation A's vision adapter over SigLIP2-base's
  // 576 rows, its speech adapter over Whisper-small's 1500.
  for (const auto& [name, spec, widths, rows] :
       {std::tuple{"vision adapter A, 1.5B (576 rows)", VisionAdapterA(),
                   std::vector<int>{4096, 2048}, 576},
        std::tuple{"speech adapter A, 1.5B (1500 rows)", SpeechAdapterA(2),
                   std::vector<int>{4096, 4096, 2048}, 1500}}) {
    const std::vector<OwnedTensor> w = MakeRandomAdapterWeights(spec, 768, widths, 1);
    MODRWKV_ASSIGN_OR_RETURN(auto on_cpu, AdapterChain::Create(spec, ViewsOf(w), ""));
    MODRWKV_ASSIGN_OR_RETURN(auto on_gpu, AdapterChain::Create(spec, ViewsOf(w), ""));
    MODRWKV_RETURN_IF_ERROR(on_gpu->UseRunner(CudaAdapter::Factory(device)));
    double flops = 0;
    for (int t = rows; const AdapterChain::Layer& l : on_cpu->layers()) {
      std::string why;
      const int t_out = AdapterChain::LayerRows(l.spec, t, &why);
      if (l.spec.op == AdapterOp::kLinear || l.spec.op == AdapterOp::kConv1d) {
        flops += 2.0 * t_out * l.out_dim * l.w.cols;  // w: [out][kernel * in]
      }
      t = t_out;
    }
    const std::vector<float> in(static_cast<size_t>(rows) * 768, 0.1f);
    std::vector<float> out;
    MODRWKV_ASSIGN_OR_RETURN(const double c,
                             Best(2, [&] { return on_cpu->Run(in, rows, &out, &pool); }));
    MODRWKV_ASSIGN_OR_RETURN(const double g,
                             Best(5, [&] { return on_gpu->Run(in, rows, &out, &pool); }));
    Row(name, 1, c, g, flops, sgemm);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace modrwkv::encoders::cuda

int main(int argc, char** argv) {
  std::vector<int> batches = {1, 4};
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int device = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    bool ok = true;
    if (arg.rfind("--batches=", 0) == 0) {
      batches.clear();
      for (absl::string_view v : absl::StrSplit(arg.substr(10), ',')) {
        int b = 0;
        ok = ok && absl::SimpleAtoi(v, &b) && b > 0;
        batches.push_back(b);
      }
    } else if (arg.rfind("--threads=", 0) == 0) {
      ok = absl::SimpleAtoi(arg.substr(10), &threads) && threads > 0;
    } else if (arg.rfind("--device=", 0) == 0) {
      ok = absl::SimpleAtoi(arg.substr(9), &device) && device >= 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: cuda_encoder_bench [--batches=1,4] [--threads=N] [--device=0]\n");
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const absl::Status s = modrwkv::encoders::cuda::Main(batches, threads, device);
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

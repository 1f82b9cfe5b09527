#include "encoders/speech/wavlm_bench.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "encoders/speech/wavlm_encoder.h"
#include "encoders/speech/wavlm_random.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/blas.h"
#include "engine/cpu/linear.h"

namespace modrwkv::encoders {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double CpuNow() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

struct Rates {
  double wall = 0, cpu = 0;  // GFLOP/s by wall time and by CPU time
};

constexpr uint64_t kSeed = 2025;
constexpr int kSampleRate = 16000;

// Best GFLOP/s of 3 runs (after a warm-up) of an n^3 product.
template <typename Fn>
Rates BestGflops(int n, Fn&& run) {
  run();
  double best = 1e30, best_cpu = 1e30;
  for (int r = 0; r < 3; ++r) {
    const double t0 = Now(), c0 = CpuNow();
    run();
    best = std::min(best, Now() - t0);
    best_cpu = std::min(best_cpu, CpuNow() - c0);
  }
  const double gflop = 2.0 * n * n * static_cast<double>(n) * 1e-9;
  return {gflop / best, gflop / best_cpu};
}

}  // namespace

absl::StatusOr<WavlmBenchResult> BenchWavlmEncoder(const std::string& shape, int threads,
                                                   double audio_seconds, int iterations) {
  if (threads < 1 || iterations < 1 || !(audio_seconds > 0) || audio_seconds > 600) {
    return absl::InvalidArgumentError(absl::StrCat("threads ", threads, ", iterations ", iterations,
                                                   ", audio_seconds ", audio_seconds,
                                                   ": expected >= 1, >= 1, (0, 600]"));
  }
  MODRWKV_ASSIGN_OR_RETURN(WavlmConfig config, WavlmConfigForShape(shape));
  std::unique_ptr<WavlmEncoder> encoder;
  {
    const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(config, kSeed);
    MODRWKV_ASSIGN_OR_RETURN(encoder, WavlmEncoder::Create(config, ViewsOf(weights), ""));
  }
  const int samples = static_cast<int>(audio_seconds * kSampleRate);
  const std::vector<float> audio = RandomWavlmAudio(1, samples, kSeed);
  WavlmBenchResult r;
  r.shape = shape;
  r.threads = threads;
  r.audio_seconds = static_cast<double>(samples) / kSampleRate;
  r.frames = encoder->OutputFrames(samples);
  r.iterations = iterations;
  if (r.frames <= 0) return absl::InvalidArgumentError("clip too short for one frame");
  std::vector<float> out(static_cast<size_t>(r.frames) * encoder->output_dim());
  cpu::ThreadPool pool(threads);
  double best = 1e30, best_cpu = 1e30;
  for (int i = 0; i < iterations + 1; ++i) {
    const double t0 = Now(), c0 = CpuNow();
    MODRWKV_RETURN_IF_ERROR(encoder->Forward(audio, 1, samples, absl::MakeSpan(out), &pool));
    if (i > 0) best = std::min(best, Now() - t0);
    if (i > 0) best_cpu = std::min(best_cpu, CpuNow() - c0);
  }
  r.cpu_seconds_per_call = best_cpu;
  r.seconds_per_call = best;
  r.real_time_factor = r.audio_seconds / best;
  r.gflop_per_clip = encoder->FlopsPerClip(samples) * 1e-9;
  r.gflops = r.gflop_per_clip / best;

  // The feature encoder alone: the same model with no transformer layer.
  {
    WavlmConfig fc = config;
    fc.num_hidden_layers = 1;
    const std::vector<OwnedTensor> weights = MakeRandomWavlmWeights(fc, kSeed);
    MODRWKV_ASSIGN_OR_RETURN(auto fe, WavlmEncoder::Create(fc, ViewsOf(weights), ""));
    double fbest = 1e30;
    for (int i = 0; i < iterations + 1; ++i) {
      const double c0 = CpuNow();
      MODRWKV_RETURN_IF_ERROR(fe->Forward(audio, 1, samples, absl::MakeSpan(out), &pool));
      if (i > 0) fbest = std::min(fbest, CpuNow() - c0);
    }
    // One layer is (total - features) / (layers - 1) of the full model: remove it.
    r.features_cpu_seconds =
        std::max(0.0, fbest - (best_cpu - fbest) / (config.num_hidden_layers - 1));
  }

  const int n = 2048;
  std::vector<float> a = RandomUniform("a", int64_t{n} * n, -1, 1, 1);
  std::vector<float> b = RandomUniform("b", int64_t{n} * n, -1, 1, 1);
  std::vector<float> c(static_cast<size_t>(n) * n);
  auto blas = cpu::GetBlas();
  Rates sgemm, panel;
  if (blas.ok()) {
    const int cols = n / pool.size();
    sgemm = BestGflops(n, [&] {
      pool.ParallelFor(pool.size(), [&](int64_t t, int) {
        const int o0 = static_cast<int>(t) * cols;
        (*blas)->sgemm(101, 111, 112, n, cols, n, 1.0f, a.data(), n,
                       b.data() + static_cast<int64_t>(o0) * n, n, 0.0f, c.data() + o0, n);
      });
    });
  }
  TensorView view{"b", DType::kF32, {n, n}, b.data(), b.size() * 4};
  const cpu::Matrix w = cpu::MakeMatrix(view, false, cpu::WType::kF32, cpu::Layout::kPanels);
  cpu::LinearRunner lin(&pool);
  panel = BestGflops(n, [&] { lin.Run(w, a.data(), n, n, c.data(), n, false); });
  r.sgemm_gflops = sgemm.wall;
  r.panel_gemm_gflops = panel.wall;
  r.fraction_of_peak = r.gflops / std::max(r.sgemm_gflops, r.panel_gemm_gflops);
  r.gflops_per_cpu_second = r.gflop_per_clip / r.cpu_seconds_per_call;
  r.peak_gflops_per_cpu_second = std::max(sgemm.cpu, panel.cpu);
  r.fraction_of_peak_cpu = r.gflops_per_cpu_second / r.peak_gflops_per_cpu_second;
  return r;
}

}  // namespace modrwkv::encoders

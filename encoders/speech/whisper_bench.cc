#include "encoders/speech/whisper_bench.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "encoders/speech/whisper_encoder.h"
#include "encoders/speech/whisper_random.h"
#include "encoders/vision/random_vit.h"
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
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

constexpr uint64_t kSeed = 2026;
constexpr double kClipSeconds = 30.0;  // one mel window: 3000 frames at hop 160, 16 kHz

}  // namespace

WhisperConfig WhisperShapeConfig(WhisperShape shape) {
  return shape == WhisperShape::kSmall ? WhisperSmallConfig() : WhisperMediumConfig();
}

const char* WhisperShapeName(WhisperShape shape) {
  return shape == WhisperShape::kSmall ? "whisper-small" : "whisper-medium";
}

GemmPeak MeasureGemmPeak(int threads) {
  constexpr int n = 2048;
  cpu::ThreadPool pool(threads);
  const std::vector<float> a = RandomUniform("a", int64_t{n} * n, -1, 1, 1);
  const std::vector<float> bt = RandomUniform("b", int64_t{n} * n, -1, 1, 1);
  std::vector<float> c(a.size());
  const double gflop = 2.0 * n * n * static_cast<double>(n) * 1e-9;
  // {GFLOP/s, GFLOP per CPU second}, each the best of 3.
  auto best_gflops = [&](auto&& run) {
    run();  // warm-up
    double best = 1e30, best_cpu = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const double t0 = Now(), c0 = CpuNow();
      run();
      best = std::min(best, Now() - t0);
      best_cpu = std::min(best_cpu, CpuNow() - c0);
    }
    return std::pair{gflop / best, gflop / best_cpu};
  };
  GemmPeak p;
  if (auto blas = cpu::GetBlas(); blas.ok()) {
    const int cols = n / pool.size();
    std::tie(p.sgemm_gflops, p.sgemm_gflops_per_cpu_s) = best_gflops([&] {
      pool.ParallelFor(pool.size(), [&](int64_t t, int) {
        const int o0 = static_cast<int>(t) * cols;
        const int w = t == pool.size() - 1 ? n - o0 : cols;
        (*blas)->sgemm(101, 111, 112, n, w, n, 1.0f, a.data(), n,
                       bt.data() + static_cast<int64_t>(o0) * n, n, 0.0f, c.data() + o0, n);
      });
    });
  }
  TensorView view{"", DType::kF32, {n, n}, bt.data(), bt.size() * 4};
  const cpu::Matrix w = cpu::MakeMatrix(view, false, cpu::WType::kF32, cpu::Layout::kPanels);
  cpu::LinearRunner lin(&pool);
  std::tie(p.panel_gemm_gflops, p.panel_gemm_gflops_per_cpu_s) =
      best_gflops([&] { lin.Run(w, a.data(), n, n, c.data(), n, false); });
  return p;
}

absl::StatusOr<WhisperBenchResult> BenchWhisperEncoder(WhisperShape shape, int threads, int batch,
                                                       int iterations) {
  if (threads < 1 || batch < 1 || iterations < 1) {
    return absl::InvalidArgumentError(absl::StrCat("threads ", threads, ", batch ", batch,
                                                   ", iterations ", iterations,
                                                   ": each must be >= 1"));
  }
  const WhisperConfig config = WhisperShapeConfig(shape);
  std::unique_ptr<WhisperEncoder> encoder;
  {
    const std::vector<OwnedTensor> weights = MakeRandomWhisperWeights(config, kSeed);
    MODRWKV_ASSIGN_OR_RETURN(encoder, WhisperEncoder::Create(config, ViewsOf(weights), ""));
  }
  const std::vector<float> mel = RandomMel(config, batch, kSeed);
  std::vector<float> out(static_cast<size_t>(batch) * encoder->frames() * encoder->dim());
  cpu::ThreadPool pool(threads);
  WhisperBenchResult r;
  r.shape = WhisperShapeName(shape);
  r.threads = threads;
  r.batch = batch;
  r.iterations = iterations;
  double best = 1e30, best_cpu = 1e30;
  for (int i = 0; i < iterations + 1; ++i) {
    const double t0 = Now(), c0 = CpuNow();
    MODRWKV_RETURN_IF_ERROR(encoder->Forward(mel, batch, absl::MakeSpan(out), &pool));
    if (i > 0) {
      best = std::min(best, Now() - t0);
      best_cpu = std::min(best_cpu, CpuNow() - c0);
    }
  }
  r.seconds_per_call = best;
  r.audio_seconds_per_second = batch * kClipSeconds / best;
  r.gflop_per_clip = encoder->FlopsPerClip() * 1e-9;
  r.gflops = r.gflop_per_clip * batch / best;
  r.cpu_seconds_per_call = best_cpu;
  r.gflops_per_cpu_s = r.gflop_per_clip * batch / best_cpu;
  r.peak = MeasureGemmPeak(threads);
  r.fraction_of_peak = r.gflops / r.peak.peak();
  r.cpu_fraction_of_peak = r.gflops_per_cpu_s / r.peak.peak_per_cpu_s();
  return r;
}

}  // namespace modrwkv::encoders

#include "encoders/vision/vision_bench.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "encoders/vision/random_vit.h"
#include "encoders/vision/vision_tower.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/cpu/blas.h"

namespace modrwkv::encoders {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr uint64_t kSeed = 2025;

}  // namespace

absl::StatusOr<double> MeasureSgemmGflops(int n, int reps) {
  MODRWKV_ASSIGN_OR_RETURN(const cpu::Blas* blas, cpu::GetBlas());
  const size_t nn = static_cast<size_t>(n) * n;
  std::vector<float> a = RandomUniform("a", static_cast<int64_t>(nn), -1, 1, 1);
  std::vector<float> b = RandomUniform("b", static_cast<int64_t>(nn), -1, 1, 1);
  std::vector<float> c(nn);
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {  // the first run warms up
    const double t0 = Now();
    blas->sgemm(101, 111, 111, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    if (r > 0) best = std::min(best, Now() - t0);
  }
  return 2.0 * n * n * static_cast<double>(n) / best * 1e-9;
}

absl::StatusOr<VisionBenchResult> BenchVisionTower(int threads, int batch, int iterations) {
  if (threads < 1 || batch < 1 || iterations < 1) {
    return absl::InvalidArgumentError(absl::StrCat("threads ", threads, ", batch ", batch,
                                                   ", iterations ", iterations,
                                                   ": each must be >= 1"));
  }
  MODRWKV_ASSIGN_OR_RETURN(VitConfig config, ParseVitConfig(R"({"model_type": "siglip",
      "vision_config": {"image_size": 384, "patch_size": 16}})"));
  std::unique_ptr<VisionTower> tower;
  {
    const std::vector<OwnedTensor> weights = MakeRandomVitWeights(config, kSeed);
    MODRWKV_ASSIGN_OR_RETURN(tower, VisionTower::Create(config, ViewsOf(weights), "", {}));
  }
  const std::vector<float> pixels = RandomPixels(config, batch, kSeed);
  std::vector<float> out(static_cast<size_t>(batch) * tower->output_rows() * tower->output_dim());
  cpu::ThreadPool pool(threads);
  VisionBenchResult r;
  r.threads = threads;
  r.batch = batch;
  r.iterations = iterations;
  double best = 1e30;
  for (int i = 0; i < iterations + 1; ++i) {
    const double t0 = Now();
    MODRWKV_RETURN_IF_ERROR(tower->Forward(pixels, batch, absl::MakeSpan(out), &pool));
    if (i > 0) best = std::min(best, Now() - t0);
  }
  r.seconds_per_call = best;
  r.images_per_second = batch / best;
  r.gflop_per_image = tower->FlopsPerImage() * 1e-9;
  r.gflops = r.gflop_per_image * r.images_per_second;
  MODRWKV_ASSIGN_OR_RETURN(r.sgemm_gflops, MeasureSgemmGflops(2048, 10));
  r.fraction_of_peak = r.gflops / (threads * r.sgemm_gflops);
  return r;
}

}  // namespace modrwkv::encoders

// The SigLIP2-base/16@384 vision tower (seeded random weights) at 1 and 2 threads, batch 1 and 2:
// images/s and GFLOP/s (~111 GFLOP per image), with the fraction of the single-thread OpenBLAS
// sgemm rate (2048^3, measured in the same run) times the thread count.
#include "benchmark/benchmark.h"
#include "encoders/vision/vision_bench.h"

namespace modrwkv::encoders {
namespace {

void BM_SiglipBase384(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  for (auto _ : state) {
    auto r = BenchVisionTower(threads, batch, 3);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    state.counters["images/s"] = r->images_per_second;
    state.counters["GFLOP/s"] = r->gflops;
    state.counters["GFLOP/image"] = r->gflop_per_image;
    state.counters["sgemm_1t_GFLOP/s"] = r->sgemm_gflops;
    state.counters["fraction_of_peak"] = r->fraction_of_peak;
  }
}
// Each iteration builds the tower and times its best of 3 calls; one iteration is enough.
BENCHMARK(BM_SiglipBase384)
    ->ArgNames({"threads", "batch"})
    ->Args({1, 1})
    ->Args({1, 2})
    ->Args({2, 1})
    ->Args({2, 2})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
}  // namespace modrwkv::encoders

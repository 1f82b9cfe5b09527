// The SigLIP2-base/16@384 vision tower (seeded random weights) at 1 and 2 threads, batch 1 and 2:
// images/s and GFLOP/s (~111 GFLOP per image), with the fraction of the single-thread OpenBLAS
// sgemm rate (2048^3, measured in the same run) times the thread count; and one attention head
// through OpenBLAS vs the engine's panel GEMM (why VisionTower uses BLAS there).
#include <vector>

#include "benchmark/benchmark.h"
#include "encoders/vision/random_vit.h"
#include "encoders/vision/vision_bench.h"
#include "engine/cpu/blas.h"
#include "engine/cpu/linear.h"

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

namespace modrwkv::encoders {
namespace {

// One attention head of siglip2-base (T = 576, head_dim 64): S = Q K^T then O = P V, through
// OpenBLAS (what VisionTower uses) or through the engine's panel GEMM (K and V^T packed per head
// as if they were weights, which each call must redo). Same FLOPs: 4 T^2 hd.
constexpr int kT = 576, kHd = 64;

void BM_AttentionHeadBlas(benchmark::State& state) {
  auto blas = cpu::GetBlas();
  if (!blas.ok()) return state.SkipWithError("no OpenBLAS");
  std::vector<float> q = RandomUniform("q", kT * kHd, -1, 1, 1),
                     k = RandomUniform("k", kT * kHd, -1, 1, 1),
                     v = RandomUniform("v", kT * kHd, -1, 1, 1), s(kT * kT), o(kT * kHd);
  for (auto _ : state) {
    (*blas)->sgemm(101, 111, 112, kT, kT, kHd, 0.125f, q.data(), kHd, k.data(), kHd, 0.0f, s.data(),
                   kT);
    (*blas)->sgemm(101, 111, 111, kT, kHd, kT, 1.0f, s.data(), kT, v.data(), kHd, 0.0f, o.data(),
                   kHd);
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(4.0 * kT * kT * kHd * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionHeadBlas);

void BM_AttentionHeadPanelGemm(benchmark::State& state) {
  std::vector<float> q = RandomUniform("q", kT * kHd, -1, 1, 1),
                     k = RandomUniform("k", kT * kHd, -1, 1, 1),
                     v = RandomUniform("v", kT * kHd, -1, 1, 1), s(kT * kT), o(kT * kHd);
  cpu::ThreadPool pool(1);
  cpu::LinearRunner lin(&pool);
  for (auto _ : state) {
    TensorView kv{"k", DType::kF32, {kT, kHd}, k.data(), k.size() * 4};
    const cpu::Matrix km = cpu::MakeMatrix(kv, false, cpu::WType::kF32, cpu::Layout::kPanels);
    lin.Run(km, q.data(), kHd, kT, s.data(), kT, false);
    TensorView vv{"v", DType::kF32, {kT, kHd}, v.data(), v.size() * 4};
    const cpu::Matrix vm = cpu::MakeMatrix(vv, true, cpu::WType::kF32, cpu::Layout::kPanels);
    lin.Run(vm, s.data(), kT, kT, o.data(), kHd, false);
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(4.0 * kT * kT * kHd * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionHeadPanelGemm);

}  // namespace
}  // namespace modrwkv::encoders

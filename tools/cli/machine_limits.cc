#include "tools/cli/machine_limits.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <vector>

#include "engine/cpu/blas.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string CpuModelName() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  }
  return "unknown";
}

}  // namespace

MachineLimits MeasureMachine(int threads) {
  MachineLimits m;
  cpu::ThreadPool pool(threads);
  m.threads = pool.size();
  m.kernel_isa = cpu::KernelIsa();
  m.cpu_model = CpuModelName();

  // Read bandwidth: 1 GiB of floats (no two pages alike), each thread sums a contiguous part with
  // SumFloats' four streams; best of 5 passes in each of four patterns: the streams a quarter of
  // the part apart (a machine that needs misses of far-apart streams in flight to reach its
  // bandwidth: the Sapphire Rapids VM of docs/benchmarks.md), or in 1 MiB windows, the streams
  // 256 KiB apart (a 2-vCPU Zen 4 VM read far-apart streams at 10.5 GB/s a core and one stream,
  // or near ones, at 27-28: the first pattern alone made batch-1 decode read "faster than
  // memory"); each with and without software prefetch (that VM read ~7% faster without).
  const size_t words = (size_t{1} << 30) / 4;
  std::vector<float> buf(words);
  pool.ParallelFor(pool.size(), [&](int64_t t, int) {
    const size_t b = words * t / pool.size(), e = words * (t + 1) / pool.size();
    for (size_t i = b; i < e; ++i) buf[i] = static_cast<float>((i * 2654435761u) & 0xFFFFFF);
  });
  std::vector<float> sums(pool.size());
  constexpr size_t kWindow = (size_t{1} << 20) / 4;
  for (const int pattern : {0, 1, 2, 3}) {
    const bool windows = pattern & 1, prefetch = pattern < 2;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = Clock::now();
      pool.ParallelFor(pool.size(), [&](int64_t t, int) {
        const size_t b = words * t / pool.size(), e = words * (t + 1) / pool.size();
        const size_t step = windows ? kWindow : e - b;
        float sum = 0;
        for (size_t i = b; i < e; i += step) {
          sum +=
              cpu::SumFloats(buf.data() + i, static_cast<int64_t>(std::min(step, e - i)), prefetch);
        }
        sums[t] = sum;
      });
      const double s = Seconds(t0, Clock::now());
      m.read_gbps = std::max(m.read_gbps, words * 4.0 / s / 1e9);
    }
  }
  std::vector<float>().swap(buf);

  // sgemm peak: OpenBLAS (the reference GEMM library), the output columns split over the pool
  // with one single-threaded sgemm per thread.
  const int n = 2048;
  std::vector<float> a(static_cast<size_t>(n) * n), bt(a.size()), c(a.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = bt[i] = 1.0f / (1 + i % 7);
  auto best_gflops = [&](auto&& run) {
    run();  // warm-up
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      run();
      best = std::max(best, 2.0 * n * n * n / Seconds(t0, Clock::now()) / 1e9);
    }
    return best;
  };
  auto blas = cpu::GetBlas();
  if (blas.ok()) {
    m.blas_core = (*blas)->core;
    const int cols = n / pool.size();
    m.sgemm_gflops = best_gflops([&] {
      pool.ParallelFor(pool.size(), [&](int64_t t, int) {
        const int o0 = static_cast<int>(t) * cols;
        (*blas)->sgemm(101, 111, 112, n, cols, n, 1.0f, a.data(), n,
                       bt.data() + static_cast<int64_t>(o0) * n, n, 0.0f, c.data() + o0, n);
      });
    });
  } else {
    m.blas_core = "none (" + std::string(blas.status().message()) + ")";
  }
  // The same product through the backend's own dense-layer path (packed f32 panels).
  TensorView view;
  view.dtype = DType::kF32;
  view.shape = {n, n};
  view.data = bt.data();
  const cpu::Matrix w = cpu::MakeMatrix(view, false, cpu::WType::kF32, cpu::Layout::kPanels);
  cpu::LinearRunner lin(&pool);
  m.panel_gemm_gflops = best_gflops([&] { lin.Run(w, a.data(), n, n, c.data(), n, false); });

  // The integer products: their instruction loop on every thread (best of 3, ~0.1 s each), and
  // the same 2048^3 product with int4 weights.
  const int64_t steps = 20'000'000;
  std::vector<int64_t> macs(pool.size());
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    pool.ParallelFor(pool.size(),
                     [&](int64_t t, int) { macs[t] = cpu::IntegerDotPeakLoop(steps); });
    const double s = Seconds(t0, Clock::now());
    int64_t total = 0;
    for (int64_t v : macs) total += v;
    m.int_dot_gops = std::max(m.int_dot_gops, 2.0 * static_cast<double>(total) / s / 1e9);
  }
  const cpu::Matrix w4 = cpu::MakeMatrix(view, false, cpu::WType::kI4, cpu::Layout::kPanels);
  m.i4_gemm_gops = best_gflops([&] { lin.Run(w4, a.data(), n, n, c.data(), n, false); });
  return m;
}

}  // namespace modrwkv::cli

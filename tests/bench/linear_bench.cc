// The dense-layer path (LinearRunner -> PanelGemm) on one thread, on the shapes a 0.1B decode step
// multiplies: the 768x768 projections, the 3072x768 FFN key and the 65536x768 head, for 1 to 512
// rows of x, f32, bf16, int8 and int4 weights. Reports GFLOP/s (compare with the sgemm peak
// `modrwkv bench` prints) and weight bytes/s (compare with its read bandwidth): batch 1 should sit
// near the bandwidth, 32 rows and more near the peak.
#include <cmath>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/base/tensor.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::cpu {
namespace {

void BM_Linear(benchmark::State& state, WType type) {
  const int out = static_cast<int>(state.range(0));
  const int in = static_cast<int>(state.range(1));
  const int rows = static_cast<int>(state.range(2));
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> wf(static_cast<size_t>(out) * in), x(static_cast<size_t>(rows) * in);
  for (float& v : wf) v = d(gen);
  for (float& v : x) v = d(gen);
  TensorView view;
  view.dtype = DType::kF32;
  view.shape = {out, in};
  view.data = wf.data();
  const Matrix w = MakeMatrix(view, false, type, Layout::kPanels);
  ThreadPool pool(1);
  LinearRunner lin(&pool);
  std::vector<float> y(static_cast<size_t>(rows) * out);
  for (auto _ : state) {
    lin.Run(w, x.data(), in, rows, y.data(), out, false);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * rows * out * in;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(w.bytes()) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (auto [out, in] : {std::pair{768, 768}, std::pair{3072, 768}, std::pair{65536, 768}}) {
    for (int rows : {1, 4, 8, 12, 32, 512}) {
      if (out == 65536 && rows == 512) continue;  // the head only runs on last rows
      b->Args({out, in, rows});
    }
  }
  b->ArgNames({"out", "in", "rows"})->Unit(benchmark::kMicrosecond);
}

// `count` matrices of `out` x `in` random weights of `type`, stored as `layout`.
std::vector<Matrix> RandomMatrices(int out, int in, int count, WType type, Layout layout,
                                   std::mt19937& gen) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> wf(static_cast<size_t>(out) * in);
  std::vector<Matrix> w;
  for (int l = 0; l < count; ++l) {
    for (float& v : wf) v = d(gen);
    TensorView view;
    view.dtype = DType::kF32;
    view.shape = {out, in};
    view.data = wf.data();
    w.push_back(MakeMatrix(view, false, type, layout));
  }
  return w;
}

// Times one product per iteration over the matrices `w` in turn, `rows` rows of x each, on one
// thread; weight_GB/s counts a whole matrix per product.
void RunInTurn(benchmark::State& state, const std::vector<Matrix>& w, const std::vector<float>& x,
               int rows) {
  ThreadPool pool(1);
  LinearRunner lin(&pool);
  const int out = w[0].rows, in = w[0].cols;
  std::vector<float> y(static_cast<size_t>(rows) * out);
  size_t l = 0;
  for (auto _ : state) {
    lin.Run(w[l], x.data(), in, rows, y.data(), out, false);
    benchmark::DoNotOptimize(y.data());
    l = (l + 1) % w.size();
  }
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(w[0].bytes()) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

// The channel mix's value product of a 0.1B decode step (768 x 3072), bf16 or int4, over 48 such
// matrices in turn (bf16 226 MB, int4 64 MB: at least twice the last-level cache, so that even
// the skipping layouts read from memory), with `density` percent of the inputs nonzero (relu^2
// activations: about 50 with random weights): packed panels read every weight; input-major
// storage reads the rows of nonzero inputs only (SparseRowsGemm, SparseI4Gemm) up to
// kSparseMaxRows rows, and above is PanelGemm over strided panels (bf16) or SparseI4Gemm four
// rows at a time (int4) (not what CpuModel runs there: it keeps the packed copy for those).
// weight_GB/s counts the whole matrix, so it exceeds the read bandwidth when rows are skipped.
void BM_FfnValue(benchmark::State& state, Layout layout, WType type) {
  const int rows = static_cast<int>(state.range(0));
  const int density = static_cast<int>(state.range(1));
  std::mt19937 gen(1);
  const std::vector<Matrix> w = RandomMatrices(768, 3072, 48, type, layout, gen);
  std::uniform_real_distribution<float> d(-1, 1);
  std::uniform_int_distribution<int> pct(0, 99);
  std::vector<float> x(static_cast<size_t>(rows) * 3072);
  for (float& v : x) v = pct(gen) < density ? d(gen) * d(gen) : 0.0f;
  RunInTurn(state, w, x, rows);
}

// The matrices BM_Stream and BM_Read go through: enough 4096 x 1024 matrices of `type` to make
// at least 128 MB.
std::vector<Matrix> StreamMatrices(WType type, std::mt19937& gen) {
  const double bits = type == WType::kF32    ? 32
                      : type == WType::kBF16 ? 16
                      : type == WType::kI8   ? 8
                                             : 4.5;
  const int count = static_cast<int>(std::ceil(128e6 / (4096.0 * 1024 * bits / 8)));
  return RandomMatrices(4096, 1024, count, type, Layout::kPanels, gen);
}

// Decode's streams: a 0.4B channel-mix key matrix (4096 x 1024) times `rows` rows, over as many
// such matrices in turn as make at least 128 MB of the type (four times the last-level cache, so
// the weights come from memory whatever their type; a fixed 16 matrices, 38 MB in int4, let part
// of int4's set stay in the 32 MB L3): weight_GB/s against `modrwkv bench`'s read bandwidth says
// how close each type's kernel comes to its memory bound, and us per call what fewer bytes buy.
void BM_Stream(benchmark::State& state, WType type) {
  const int rows = static_cast<int>(state.range(0));
  std::mt19937 gen(1);
  const std::vector<Matrix> w = StreamMatrices(type, gen);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> x(static_cast<size_t>(rows) * 1024);
  for (float& v : x) v = d(gen);
  RunInTurn(state, w, x, rows);
}

// BM_Stream's matrices read in the same order by a plain sum (SumFloats, with or without its
// software prefetch; no product): what this access pattern gets from the memory, the bound
// BM_Stream's weight_GB/s is judged by.
void BM_Read(benchmark::State& state, WType type) {
  const bool prefetch = state.range(0) != 0;
  std::mt19937 gen(1);
  const std::vector<Matrix> w = StreamMatrices(type, gen);
  size_t l = 0;
  float fsum = 0;
  for (auto _ : state) {
    const auto* f = static_cast<const float*>(w[l].data());
    fsum += SumFloats(f, w[l].bytes() / 4, prefetch);
    benchmark::DoNotOptimize(fsum);
    l = (l + 1) % w.size();
  }
  state.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(w[0].bytes()) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

// The same for a 1.5B decode step's value matrix (2048 x 8192) in int4, 8 copies in turn (75 MB).
void BM_FfnValue15b(benchmark::State& state, Layout layout) {
  const int rows = static_cast<int>(state.range(0));
  const int density = static_cast<int>(state.range(1));
  std::mt19937 gen(1);
  const std::vector<Matrix> w = RandomMatrices(2048, 8192, 8, WType::kI4, layout, gen);
  std::uniform_real_distribution<float> d(-1, 1);
  std::uniform_int_distribution<int> pct(0, 99);
  std::vector<float> x(static_cast<size_t>(rows) * 8192);
  for (float& v : x) v = pct(gen) < density ? d(gen) * d(gen) : 0.0f;
  RunInTurn(state, w, x, rows);
}

void FfnValueCases(benchmark::internal::Benchmark* b) {
  for (int rows : {1, 2, 4, 8, 9, 16, 32}) {
    for (int density : {100, 50, 30, 20, 10}) b->Args({rows, density});
  }
  b->ArgNames({"rows", "density"})->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_Linear, f32, WType::kF32)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_FfnValue, packed, Layout::kPanels, WType::kBF16)->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_FfnValue, input_major, Layout::kInputRows, WType::kBF16)->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_FfnValue, int4_packed, Layout::kPanels, WType::kI4)->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_FfnValue, int4_input_major, Layout::kInputRows, WType::kI4)
    ->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_FfnValue15b, int4_packed, Layout::kPanels)->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_FfnValue15b, int4_input_major, Layout::kInputRows)->Apply(FfnValueCases);
BENCHMARK_CAPTURE(BM_Linear, bf16, WType::kBF16)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Linear, int8, WType::kI8)->Apply(Shapes);
BENCHMARK_CAPTURE(BM_Linear, int4, WType::kI4)->Apply(Shapes);
void StreamRows(benchmark::internal::Benchmark* b) {
  for (int rows : {1, 2, 4, 12}) b->Arg(rows);
  b->ArgNames({"rows"})->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(BM_Stream, f32, WType::kF32)->Apply(StreamRows);
BENCHMARK_CAPTURE(BM_Stream, bf16, WType::kBF16)->Apply(StreamRows);
BENCHMARK_CAPTURE(BM_Stream, int8, WType::kI8)->Apply(StreamRows);
BENCHMARK_CAPTURE(BM_Stream, int4, WType::kI4)->Apply(StreamRows);
BENCHMARK_CAPTURE(BM_Read, f32, WType::kF32)
    ->ArgName("prefetch")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Read, int4, WType::kI4)
    ->ArgName("prefetch")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace modrwkv::cpu

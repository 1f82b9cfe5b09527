// 16-bit-weight products (see gemv_half.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/launch.h"
#include "engine/cuda/rwkv7_math.h"

namespace modrwkv::cuda {
namespace {

constexpr int kRowsPerPass = 8;
constexpr int kWarpsPerBlock = 8;
// Blocks resident per SM that the kernel's registers must allow (64 registers a thread): 4 of 8
// warps, 32 warps an SM, measured faster on an H200 than 3 with more loads in flight per lane.
[[maybe_unused]] constexpr int kBlocksPerSm = 4;  // (the emulator drops launch bounds)

// acc[r] += the dot product of the weights in `wv` (2 x `pairs` floats) with row r's x at
// float offset `at` (16-byte loads of x when kPairs is even: `at` is then a multiple of 4).
template <int kPairs>
__device__ __forceinline__ void Accumulate(const float2 (&wv)[kPairs], const float* x, int64_t ldx,
                                           int64_t at, int nr, float (&acc)[kRowsPerPass]) {
#pragma unroll
  for (int r = 0; r < kRowsPerPass; ++r) {
    if (r >= nr) break;
    const float* xr = x + r * ldx + at;
    if constexpr (kPairs % 2 == 0) {
#pragma unroll
      for (int q = 0; q < kPairs; q += 2) {
        const float4 xv = reinterpret_cast<const float4*>(xr)[q / 2];
        acc[r] = fmaf(wv[q].x, xv.x, acc[r]);
        acc[r] = fmaf(wv[q].y, xv.y, acc[r]);
        acc[r] = fmaf(wv[q + 1].x, xv.z, acc[r]);
        acc[r] = fmaf(wv[q + 1].y, xv.w, acc[r]);
      }
    } else {
#pragma unroll
      for (int q = 0; q < kPairs; ++q) {
        const float2 xv = reinterpret_cast<const float2*>(xr)[q];
        acc[r] = fmaf(wv[q].x, xv.x, acc[r]);
        acc[r] = fmaf(wv[q].y, xv.y, acc[r]);
      }
    }
  }
}

// What the epilogue makes of a finished sum v, stored at dst.
__device__ __forceinline__ void Finish(float v, float* dst, GemvEpilogue epilogue) {
  switch (epilogue) {
    case GemvEpilogue::kStore:
      *dst = v;
      break;
    case GemvEpilogue::kAccumulate:
      *dst += v;
      break;
    case GemvEpilogue::kTanh:
      *dst = tanhf(v);
      break;
    case GemvEpilogue::kSigmoid:
      *dst = math::Sigmoid(v);
      break;
    case GemvEpilogue::kReluSquare:
      *dst = math::ReluSquare(v);
      break;
  }
}

// Where a warp works: output row o of its job, the slice [c0, c1) of the row's 16-byte chunks (or
// of its weight pairs, narrow form), part `part` of the `split` warps that share the row.
struct WarpTask {
  int o, part, split;
  int c0, c1;
};

__device__ __forceinline__ int Lane() { return static_cast<int>(threadIdx.x) % 32; }
__device__ __forceinline__ int Warp() { return static_cast<int>(threadIdx.x) / 32; }

// Output row o of one product: the rows of x kRowsPerPass at a time, `dot(xr, nr, acc)` adding
// the warp's slice of row o's weights times each of the pass's nr rows (starting at xr) into acc.
// The split warps of a row add their sums in shared memory in a fixed order (part 0 first), so
// the result does not depend on which warp finishes first.
template <typename Dot>
__device__ __forceinline__ void ForEachPass(const GemvJob& job, int rows, const WarpTask& t,
                                            bool active, Dot dot) {
  __shared__ float partial[kWarpsPerBlock][kRowsPerPass];
  for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int nr = min(kRowsPerPass, rows - r0);
    float acc[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
    if (active) dot(job.x + static_cast<int64_t>(r0) * job.in, nr, acc);
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) {
      if (r >= nr) break;  // nr is the same in the whole block
      for (int s = 16; s > 0; s >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], s);
    }
    float* y = job.y + static_cast<int64_t>(r0) * job.out + t.o;
    if (t.split == 1) {
      if (active && Lane() == 0) {
#pragma unroll
        for (int r = 0; r < kRowsPerPass; ++r) {
          if (r < nr) Finish(acc[r], y + static_cast<int64_t>(r) * job.out, job.epilogue);
        }
      }
      continue;
    }
    if (Lane() == 0) {
#pragma unroll
      for (int r = 0; r < kRowsPerPass; ++r) partial[Warp()][r] = acc[r];
    }
    __syncthreads();
    if (active && t.part == 0 && Lane() < nr) {
      float v = 0.0f;
      for (int q = 0; q < t.split; ++q) v += partial[Warp() + q][Lane()];
      Finish(v, y + static_cast<int64_t>(Lane()) * job.out, job.epilogue);
    }
    __syncthreads();  // partial is rewritten by the next pass
  }
}

// Wide form: each lane takes 8 weights (one 16-byte load) per chunk, kUnroll chunks in flight.
constexpr int kUnroll = 4;

// A lane's first kUnroll chunks of its slice, copied to shared memory before the wait for the
// predecessor (EarlyWeightLoads, launch.h) and used by the slice's first pass (shared memory, not
// registers: held across the wait they took the kernel past its 64 registers).
struct EarlyChunks {
  uint4 (*chunks)[kUnroll][32];  // [warp][u][lane]: the block's shared buffer
  bool loaded = false;
};

// Row o's weights as 16-byte chunks.
__device__ __forceinline__ const uint4* WideWeights(const GemvJob& job, const WarpTask& t) {
  return reinterpret_cast<const uint4*>(job.w) + static_cast<int64_t>(t.o) * (job.in / 8);
}

// Starts copying the lane's first kUnroll chunks (those inside the slice) to `early`.
__device__ __forceinline__ void LoadEarly(const GemvJob& job, const WarpTask& t,
                                          EarlyChunks& early) {
  const uint4* wrow = WideWeights(job, t);
  const int c = t.c0 + Lane();
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (c + 32 * u < t.c1) CpAsync16(&early.chunks[Warp()][u][Lane()], wrow + c + 32 * u);
  }
  early.loaded = true;
}

template <HalfType T>
__device__ __forceinline__ void WideRow(const GemvJob& job, int rows, const WarpTask& t,
                                        bool active, EarlyChunks& early) {
  const int in = job.in;
  const uint4* wrow = WideWeights(job, t);
  ForEachPass(job, rows, t, active, [&](const float* xr, int nr, float(&acc)[kRowsPerPass]) {
    auto add = [&](const uint4& raw, int c) {
      const float2 wv[4] = {Widen2<T>(raw.x), Widen2<T>(raw.y), Widen2<T>(raw.z), Widen2<T>(raw.w)};
      Accumulate<4>(wv, xr, in, static_cast<int64_t>(c) * 8, nr, acc);
    };
    int c = t.c0 + Lane();
    if (early.loaded) {  // the first pass: its first chunks are on their way or in
      CpAsyncWaitAll();
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (c + 32 * u < t.c1) add(early.chunks[Warp()][u][Lane()], c + 32 * u);
      }
      c += 32 * kUnroll;
      early.loaded = false;
    }
    for (; c + 32 * (kUnroll - 1) < t.c1; c += 32 * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) raw[u] = __ldg(wrow + c + 32 * u);  // all in flight
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) add(raw[u], c + 32 * u);
    }
    for (; c < t.c1; c += 32) add(__ldg(wrow + c), c);
  });
}

// Narrow form, for any even `in`: one pair of weights per lane at a time (never split).
template <HalfType T>
__device__ __forceinline__ void PairRow(const GemvJob& job, int rows, const WarpTask& t,
                                        bool active) {
  const int in = job.in;
  const int pairs = in / 2;
  const uint32_t* wrow =
      reinterpret_cast<const uint32_t*>(job.w) + static_cast<int64_t>(t.o) * pairs;
  ForEachPass(job, rows, t, active, [&](const float* xr, int nr, float(&acc)[kRowsPerPass]) {
    for (int p = Lane(); p < pairs; p += 32) {
      const float2 wv[1] = {Widen2<T>(__ldg(wrow + p))};
      Accumulate<1>(wv, xr, in, static_cast<int64_t>(p) * 2, nr, acc);
    }
  });
}

// A warp's share of a long row: rows longer than this many bytes are split between 2, 4 or 8
// warps of a block, so that a layer's long-row product (ffn value: 16 KB rows on 1.5B) has as
// many warps, and as many bytes in flight, as its short-row ones (measured on an H200, cuda_bench
// --kernels=on: slices of 2 KB or 8 KB, or 8 loads in flight per lane, were slower).
constexpr int kSliceBytes = 4096;

// Warps that share a row of `in` weights (the wide form only).
__host__ __device__ int SplitOf(int in, bool wide) {
  int split = 1;
  if (!wide) return split;
  while (split<kWarpsPerBlock&& static_cast<int64_t>(in) * 2 / split> kSliceBytes) split *= 2;
  return split;
}

// A group's jobs with the blocks each owns: job j has blocks [first_block[j], first_block[j+1]),
// each block kWarpsPerBlock / SplitOf(in, wide[j]) of its output rows.
struct GroupArgs {
  GemvJob job[kMaxGemvJobs];
  int first_block[kMaxGemvJobs + 1];
  bool wide[kMaxGemvJobs];
  int n;
  bool early;  // EarlyWeightLoads() at the launch
};

template <HalfType T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, kBlocksPerSm)
    GemvHalfGroupKernel(GroupArgs g, int rows) {
  AllowSuccessor();
  int j = 0;
  while (j + 1 < g.n && static_cast<int>(blockIdx.x) >= g.first_block[j + 1]) ++j;
  const GemvJob& job = g.job[j];
  WarpTask t;
  t.split = SplitOf(job.in, g.wide[j]);
  t.part = Warp() % t.split;
  t.o = (static_cast<int>(blockIdx.x) - g.first_block[j]) * (kWarpsPerBlock / t.split) +
        Warp() / t.split;
  const int units = g.wide[j] ? job.in / 8 : job.in / 2;  // 16-byte chunks or weight pairs
  t.c0 = static_cast<int>(static_cast<int64_t>(units) * t.part / t.split);
  t.c1 = static_cast<int>(static_cast<int64_t>(units) * (t.part + 1) / t.split);
  // A block's warps stay together through the split rows' barriers; past the last row they
  // only take part in those.
  const bool active = t.o < job.out;
  if (!active && t.split == 1) return;
  // The weights are no kernel's output: a lane's first loads may be in flight while the kernel
  // before it finishes (a dozen dependent kernels a layer at batch 1, most of them too small to
  // keep the memory busy by themselves). Sending the whole slice to L2 before the wait instead
  // (PrefetchToL2) made a decode step slower on an H200 (559 -> 524 tokens/s on 1.5B at batch
  // 1): extra L2 traffic; these are the loads the first pass makes anyway.
  __shared__ uint4 early_chunks[kWarpsPerBlock][kUnroll][32];  // 16 KB
  EarlyChunks early{early_chunks};
  if (g.early && g.wide[j] && active) LoadEarly(job, t, early);
  WaitForPredecessor();
  if (g.wide[j]) {
    WideRow<T>(job, rows, t, active, early);
  } else {
    PairRow<T>(job, rows, t, active);
  }
}

absl::Status CheckJob(const GemvJob& j, int rows) {
  if (j.out < 0 || j.in <= 0 || j.in % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchGemvHalf: out = ", j.out, ", in = ", j.in,
                                                   ", rows = ", rows,
                                                   " (expected in > 0 and even)"));
  }
  if (j.out == 0 || rows == 0) return absl::OkStatus();
  if (j.w == nullptr || j.x == nullptr || j.y == nullptr) {
    return absl::InvalidArgumentError("LaunchGemvHalf: null device pointer");
  }
  if (reinterpret_cast<uintptr_t>(j.w) % 4 != 0 || reinterpret_cast<uintptr_t>(j.x) % 8 != 0) {
    return absl::InvalidArgumentError("LaunchGemvHalf: w must be 4-byte and x 8-byte aligned");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchGemvHalfGroup(cudaStream_t stream, HalfType type, absl::Span<const GemvJob> jobs,
                                 int rows) {
  if (jobs.empty() || jobs.size() > kMaxGemvJobs || rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchGemvHalfGroup: ", jobs.size(), " jobs (1 to ", kMaxGemvJobs, "), rows = ", rows));
  }
  GroupArgs g{};
  int64_t blocks = 0;
  for (const GemvJob& j : jobs) {
    MODRWKV_RETURN_IF_ERROR(CheckJob(j, rows));
    if (j.out == 0) continue;
    g.job[g.n] = j;
    g.first_block[g.n] = static_cast<int>(blocks);
    g.wide[g.n] = j.in % 8 == 0 && reinterpret_cast<uintptr_t>(j.w) % 16 == 0 &&
                  reinterpret_cast<uintptr_t>(j.x) % 16 == 0;
    const int rows_per_block = kWarpsPerBlock / SplitOf(j.in, g.wide[g.n]);
    ++g.n;
    blocks += (j.out + rows_per_block - 1) / rows_per_block;
  }
  if (g.n == 0 || rows == 0) return absl::OkStatus();
  g.first_block[g.n] = static_cast<int>(blocks);
  g.early = EarlyWeightLoads();
  return Launch("GemvHalfGroupKernel",
                type == HalfType::kBF16 ? GemvHalfGroupKernel<HalfType::kBF16>
                                        : GemvHalfGroupKernel<HalfType::kF16>,
                dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, g, rows);
}

absl::Status LaunchGemvHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out, int in,
                            const float* x, int rows, float* y, bool accumulate) {
  const GemvJob job{w, out, in,
                    x, y,   accumulate ? GemvEpilogue::kAccumulate : GemvEpilogue::kStore};
  return LaunchGemvHalfGroup(stream, type, {&job, 1}, rows);
}

}  // namespace modrwkv::cuda

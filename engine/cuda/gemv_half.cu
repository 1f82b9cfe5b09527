// 16-bit-weight products (see gemv_half.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/rwkv7_math.h"

namespace modrwkv::cuda {
namespace {

constexpr int kRowsPerPass = 8;
constexpr int kWarpsPerBlock = 8;

// The two 16-bit weights packed in `bits` (low half first) as floats.
template <HalfType T>
__device__ __forceinline__ float2 Widen2(uint32_t bits) {
  if constexpr (T == HalfType::kBF16) {
    return make_float2(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
  } else {
    __half2 h;
    static_assert(sizeof(h) == 4);
    memcpy(&h, &bits, 4);
    return __half22float2(h);
  }
}

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

__device__ __forceinline__ void Store(float (&acc)[kRowsPerPass], int nr, int lane, float* y,
                                      int out, int o, GemvEpilogue epilogue) {
#pragma unroll
  for (int r = 0; r < kRowsPerPass; ++r) {
    float v = acc[r];
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    if (lane == 0 && r < nr) {
      float* dst = y + static_cast<int64_t>(r) * out + o;
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
  }
}

// Output row o of one product, one warp: the rows of x kRowsPerPass at a time, `dot(xr, nr, acc)`
// adding row o's weights times each of the pass's nr rows (starting at xr) into acc.
template <typename Dot>
__device__ __forceinline__ void ForEachPass(const GemvJob& job, int rows, int o, int lane,
                                            Dot dot) {
  for (int r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int nr = min(kRowsPerPass, rows - r0);
    float acc[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) acc[r] = 0.0f;
    dot(job.x + static_cast<int64_t>(r0) * job.in, nr, acc);
    Store(acc, nr, lane, job.y + static_cast<int64_t>(r0) * job.out, job.out, o, job.epilogue);
  }
}

// Wide form: each lane takes 8 weights (one 16-byte load) per chunk, kUnroll chunks in flight.
template <HalfType T>
__device__ void WideRow(const GemvJob& job, int rows, int o, int lane) {
  constexpr int kUnroll = 4;
  const int in = job.in;
  const int chunks = in / 8;
  const uint4* wrow = reinterpret_cast<const uint4*>(job.w) + static_cast<int64_t>(o) * chunks;
  ForEachPass(job, rows, o, lane, [&](const float* xr, int nr, float(&acc)[kRowsPerPass]) {
    int c = lane;
    for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) raw[u] = __ldg(wrow + c + 32 * u);  // all in flight
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float2 wv[4] = {Widen2<T>(raw[u].x), Widen2<T>(raw[u].y), Widen2<T>(raw[u].z),
                              Widen2<T>(raw[u].w)};
        Accumulate<4>(wv, xr, in, static_cast<int64_t>(c + 32 * u) * 8, nr, acc);
      }
    }
    for (; c < chunks; c += 32) {
      const uint4 raw = __ldg(wrow + c);
      const float2 wv[4] = {Widen2<T>(raw.x), Widen2<T>(raw.y), Widen2<T>(raw.z), Widen2<T>(raw.w)};
      Accumulate<4>(wv, xr, in, static_cast<int64_t>(c) * 8, nr, acc);
    }
  });
}

// Narrow form, for any even `in`: one pair of weights per lane at a time.
template <HalfType T>
__device__ void PairRow(const GemvJob& job, int rows, int o, int lane) {
  const int in = job.in;
  const int pairs = in / 2;
  const uint32_t* wrow = reinterpret_cast<const uint32_t*>(job.w) + static_cast<int64_t>(o) * pairs;
  ForEachPass(job, rows, o, lane, [&](const float* xr, int nr, float(&acc)[kRowsPerPass]) {
    for (int p = lane; p < pairs; p += 32) {
      const float2 wv[1] = {Widen2<T>(__ldg(wrow + p))};
      Accumulate<1>(wv, xr, in, static_cast<int64_t>(p) * 2, nr, acc);
    }
  });
}

// A group's jobs with the blocks each owns: job j has blocks [first_block[j], first_block[j+1]).
struct GroupArgs {
  GemvJob job[kMaxGemvJobs];
  int first_block[kMaxGemvJobs + 1];
  bool wide[kMaxGemvJobs];
  int n;
};

template <HalfType T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) GemvHalfGroupKernel(GroupArgs g, int rows) {
  int j = 0;
  while (j + 1 < g.n && static_cast<int>(blockIdx.x) >= g.first_block[j + 1]) ++j;
  const GemvJob& job = g.job[j];
  const int o = (static_cast<int>(blockIdx.x) - g.first_block[j]) * kWarpsPerBlock +
                static_cast<int>(threadIdx.x) / 32;
  if (o >= job.out) return;
  const int lane = threadIdx.x % 32;
  if (g.wide[j]) {
    WideRow<T>(job, rows, o, lane);
  } else {
    PairRow<T>(job, rows, o, lane);
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
    ++g.n;
    blocks += (j.out + kWarpsPerBlock - 1) / kWarpsPerBlock;
  }
  if (g.n == 0 || rows == 0) return absl::OkStatus();
  g.first_block[g.n] = static_cast<int>(blocks);
  const unsigned grid = static_cast<unsigned>(blocks);
  if (type == HalfType::kBF16) {
    GemvHalfGroupKernel<HalfType::kBF16><<<grid, kWarpsPerBlock * 32, 0, stream>>>(g, rows);
  } else {
    GemvHalfGroupKernel<HalfType::kF16><<<grid, kWarpsPerBlock * 32, 0, stream>>>(g, rows);
  }
  return CudaStatus(cudaGetLastError(), "GemvHalf kernel launch");
}

absl::Status LaunchGemvHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out, int in,
                            const float* x, int rows, float* y, bool accumulate) {
  const GemvJob job{w, out, in,
                    x, y,   accumulate ? GemvEpilogue::kAccumulate : GemvEpilogue::kStore};
  return LaunchGemvHalfGroup(stream, type, {&job, 1}, rows);
}

}  // namespace modrwkv::cuda

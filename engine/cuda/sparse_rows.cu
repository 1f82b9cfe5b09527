// The sparse value product of a decode step and its launcher (see sparse_rows.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/half_round.cuh"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/sparse_rows.cuh"

namespace modrwkv::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kWarpInputs = 32;  // one per lane in the vote on which inputs are nonzero
constexpr int kSliceInputs = kWarps * kWarpInputs;
constexpr int kInFlight = 4;  // weight rows loaded together

// Columns of a lane: 8 (one 16-byte load per input row) up to 8 rows of x; 4 (8 bytes) above, so
// that the sums, rows x columns, stay 64 registers.
template <int kRows>
constexpr int kLaneCols = kRows <= 8 ? 8 : 4;
template <int kRows>
constexpr int kTileCols = 32 * kLaneCols<kRows>;
constexpr int kMinTileCols = kTileCols<kSparseRowsMax>;

template <HalfType T, int kRows>
__global__ void __launch_bounds__(kWarps * 32)
    SparseRowsKernel(const uint16_t* __restrict__ w, int out, int in, const float* __restrict__ x,
                     int rows, float* __restrict__ y, bool accumulate, float* __restrict__ partial,
                     unsigned* __restrict__ tickets) {
  AllowSuccessor();
  constexpr int kCols = kLaneCols<kRows>, kTile = kTileCols<kRows>;
  using Load = std::conditional_t<kCols == 8, uint4, uint2>;
  static_assert(sizeof(Load) == kCols * 2);
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int tile = static_cast<int>(blockIdx.x), slice = static_cast<int>(blockIdx.y);
  const int slices = static_cast<int>(gridDim.y);
  const int tile0 = tile * kTile, c0 = tile0 + lane * kCols;
  const bool mine = c0 < out;  // out is a multiple of 8: a lane's columns are all in or all out
  const int i0 = slice * kSliceInputs + warp * kWarpInputs;
  __shared__ float sums[kRows][kTile];
  __shared__ bool last;
  WaitForPredecessor();

  // Lane j holds input i0 + j of every row and votes whether it is nonzero in any.
  float xs[kRows];
  bool nonzero = false;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    xs[r] = r < rows && i0 + lane < in ? x[static_cast<int64_t>(r) * in + i0 + lane] : 0.0f;
    nonzero |= xs[r] != 0.0f;
  }
  unsigned pending = __ballot_sync(0xffffffffu, nonzero);  // the same in every lane
  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }
  const uint16_t* wcol = w + c0;
  while (pending != 0) {
    int src[kInFlight];  // lanes (inputs i0 + src) in increasing order, -1 past the last
#pragma unroll
    for (int q = 0; q < kInFlight; ++q) {
      src[q] = pending != 0 ? __ffs(static_cast<int>(pending)) - 1 : -1;
      pending &= pending - 1;
    }
    Load raw[kInFlight];
#pragma unroll
    for (int q = 0; q < kInFlight; ++q) {  // all in flight before the arithmetic
      raw[q] = Load{};
      if (src[q] >= 0 && mine) {
        raw[q] =
            __ldg(reinterpret_cast<const Load*>(wcol + static_cast<int64_t>(i0 + src[q]) * out));
      }
    }
#pragma unroll
    for (int q = 0; q < kInFlight; ++q) {
      if (src[q] < 0) break;  // the same in every lane
      const uint32_t* words = reinterpret_cast<const uint32_t*>(&raw[q]);
      float wv[kCols];
#pragma unroll
      for (int k = 0; k < kCols / 2; ++k) {
        const float2 p = Widen2<T>(words[k]);
        wv[2 * k] = p.x;
        wv[2 * k + 1] = p.y;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float xv = __shfl_sync(0xffffffffu, xs[r], src[q]);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(xv, wv[c], acc[r][c]);
      }
    }
  }

  // The warps' sums, added in warp order.
  for (int wp = 0; wp < kWarps; ++wp) {
    if (warp == wp) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          float& s = sums[r][lane * kCols + c];
          s = wp == 0 ? acc[r][c] : s + acc[r][c];
        }
      }
    }
    __syncthreads();
  }
  const int width = min(kTile, out - tile0);
  auto store = [&](int r, int c, float v) {
    float& dst = y[static_cast<int64_t>(r) * out + tile0 + c];
    dst = accumulate ? dst + v : v;
  };
  if (slices == 1) {
    for (int k = static_cast<int>(threadIdx.x); k < rows * width; k += kWarps * 32) {
      store(k / width, k % width, sums[k / width][k % width]);
    }
    return;
  }
  // The slices meet in `partial`; the tile's last block to finish adds them in slice order.
  float* own = partial + static_cast<int64_t>(slice) * rows * out + tile0;
  for (int k = static_cast<int>(threadIdx.x); k < rows * width; k += kWarps * 32) {
    own[static_cast<int64_t>(k / width) * out + k % width] = sums[k / width][k % width];
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&tickets[tile], 1u) == static_cast<unsigned>(slices - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int k = static_cast<int>(threadIdx.x); k < rows * width; k += kWarps * 32) {
    const int r = k / width, c = k % width;
    float s = 0.0f;
    for (int sl = 0; sl < slices; ++sl) {
      s += __ldcg(partial + (static_cast<int64_t>(sl) * rows + r) * out + tile0 + c);
    }
    store(r, c, s);
  }
  if (threadIdx.x == 0) tickets[tile] = 0;  // for the next launch
}

int Slices(int in) { return (in + kSliceInputs - 1) / kSliceInputs; }

template <HalfType T>
absl::Status LaunchFor(cudaStream_t stream, const uint16_t* w, int out, int in, const float* x,
                       int rows, float* y, bool accumulate, const SparseRowsScratch& scratch) {
  const dim3 block(kWarps * 32);
  const unsigned slices = static_cast<unsigned>(Slices(in));
  if (rows <= 8) {
    const dim3 grid((out + kTileCols<8> - 1) / kTileCols<8>, slices);
    return Launch("SparseRowsKernel", SparseRowsKernel<T, 8>, grid, block, 0, stream, w, out, in, x,
                  rows, y, accumulate, scratch.partial, scratch.tickets);
  }
  const dim3 grid((out + kMinTileCols - 1) / kMinTileCols, slices);
  return Launch("SparseRowsKernel", SparseRowsKernel<T, kSparseRowsMax>, grid, block, 0, stream, w,
                out, in, x, rows, y, accumulate, scratch.partial, scratch.tickets);
}

}  // namespace

int64_t SparseRowsScratchFloats(int out, int in, int rows) {
  return Slices(in) > 1 ? static_cast<int64_t>(Slices(in)) * rows * out : 0;
}

int SparseRowsTickets(int out) { return (out + kMinTileCols - 1) / kMinTileCols; }

absl::Status LaunchSparseRowsHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out,
                                  int in, const float* x, int rows, float* y, bool accumulate,
                                  const SparseRowsScratch& scratch) {
  if (rows < 0 || rows > kSparseRowsMax || out <= 0 || out % 8 != 0 || in <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchSparseRowsHalf: out = ", out, ", in = ", in, ", rows = ", rows,
        " (expected out a positive multiple of 8, in > 0, rows <= ", kSparseRowsMax, ")"));
  }
  if (rows == 0) return absl::OkStatus();
  if (w == nullptr || x == nullptr || y == nullptr ||
      (Slices(in) > 1 && (scratch.partial == nullptr || scratch.tickets == nullptr))) {
    return absl::InvalidArgumentError("LaunchSparseRowsHalf: null device pointer");
  }
  if (reinterpret_cast<uintptr_t>(w) % 16 != 0) {
    return absl::InvalidArgumentError("LaunchSparseRowsHalf: w must be 16-byte aligned");
  }
  return type == HalfType::kBF16
             ? LaunchFor<HalfType::kBF16>(stream, w, out, in, x, rows, y, accumulate, scratch)
             : LaunchFor<HalfType::kF16>(stream, w, out, in, x, rows, y, accumulate, scratch);
}

}  // namespace modrwkv::cuda

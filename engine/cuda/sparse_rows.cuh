// The channel mix's value product of a decode step, reading only the weights of its nonzero
// inputs: y = x * W^T where x holds relu^2 activations, zero for about half of them with random
// weights and for more with trained ones, so a step of a few sequences needs only the rows of W^T
// (input-major storage) whose input is nonzero in some sequence. The GPU twin of the CPU
// backend's SparseRowsGemm (engine/cpu/kernels.h), with its sums in another order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/cuda/gemv_half.cuh"

namespace modrwkv::cuda {

// Rows of x one launch takes (the few-row path's: fewer than the tensor-core products' 16).
constexpr int kSparseRowsMax = 15;

// Where the blocks of one product meet: the sums of each slice of the inputs (`partial`, floats)
// and a ticket counter per tile of output columns (zero between launches: the last block of a
// tile resets it). Sized by SparseRowsScratchFloats / SparseRowsTickets, allocated once.
struct SparseRowsScratch {
  float* partial = nullptr;
  unsigned* tickets = nullptr;
};
int64_t SparseRowsScratchFloats(int out, int in, int rows);
int SparseRowsTickets(int out);

// y[r][o] (+)= sum_i x[r][i] * widen(w[i][o]) for r < rows <= kSparseRowsMax, o < out, over
// the inputs i with x[r'][i] != 0 for some r' (the others add nothing). w: [in][out] row-major
// 16-bit bits of `type` (input-major), 16-byte aligned, out a multiple of 8; x: [rows][in];
// y: [rows][out]. Blocks of 8 warps own a tile of output columns (256 up to 8 rows, 128 above)
// and a slice of 256 inputs:
// each warp finds which of its 32 inputs are nonzero (one ballot), loads only their weight rows,
// four at a time in flight, and keeps its rows' sums in registers; the warps' sums are added in
// warp order, the slices' by the last block of the tile to finish, in slice order, so results are
// deterministic and each row's depends only on its own x (a skipped input would add exactly zero).
// Launched overlapped with the kernel before it (launch.cuh). InvalidArgument for inconsistent
// sizes or pointers.
absl::Status LaunchSparseRowsHalf(cudaStream_t stream, HalfType type, const uint16_t* w, int out,
                                  int in, const float* x, int rows, float* y, bool accumulate,
                                  const SparseRowsScratch& scratch);

}  // namespace modrwkv::cuda

// cuda_bench --kernels=on: single kernels timed in isolation, each launched back to back from a
// CUDA graph over weights that do not fit in L2, against the measured copy bandwidth — the
// few-row product at the layers' shapes (with and without overlapped launches, cuBLAS at one row
// beside it), a decode step's LayerNorm + token shift, a prefill step's LayerNorm and token shift
// (separate and as NormShiftRows), the WKV of a decode token and of prompts (walked and chunked),
// a prefill step's time-mixing core as three kernels and fused (walking: 16 prompts of 128
// tokens; chunked: one of 2048), and the sparse value product.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/cuda/cublas_api.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/gemv_half.cuh"
#include "engine/cuda/launch.h"
#include "engine/cuda/rwkv7_ops.cuh"
#include "engine/cuda/sparse_rows.cuh"
#include "engine/cuda/wkv.cuh"
#include "engine/cuda/wkv_decode.cuh"
#include "engine/cuda/wkv_prefill.cuh"
#include "tests/engine/cuda/cuda_bench_timing.h"

namespace modrwkv::cuda::bench {

namespace {

struct Shape {
  int out, in;
};
struct WkvCase {
  int seqs, tokens;
  WkvForm form;
};
using CoreCase = WkvCase;

// What each part of the table runs at: the released models' shapes, or (smoke) small ones that
// take every code path in seconds on the CUDA emulator.
struct KernelSizes {
  size_t span;  // bytes of weights a few-row product rotates through (beyond L2)
  std::vector<Shape> gemv;
  int sparse_out, sparse_in;    // the value product's shape
  int norm_c;                   // a decode step's LayerNorm + shift: channels
  int rows_r, rows_c;           // a prefill step's LayerNorm + shift: rows x channels
  int heads;                    // WKV and the time-mixing core
  std::vector<WkvCase> wkv;     // seqs x tokens, form
  std::vector<CoreCase> cores;  // the prefill time-mixing core
};

KernelSizes SizesFor(bool smoke) {
  if (smoke) {
    return {size_t{64} << 10,
            {Shape{128, 128}, Shape{64, 4096}, Shape{256, 64}},
            64,
            256,
            256,
            32,
            256,
            2,
            {WkvCase{1, 1, WkvForm::kWalk}, WkvCase{1, 40, WkvForm::kWalk},
             WkvCase{1, 40, WkvForm::kChunked}, WkvCase{3, 20, WkvForm::kWalk},
             WkvCase{3, 20, WkvForm::kChunked}},
            {CoreCase{3, 20, WkvForm::kWalk}, CoreCase{1, 40, WkvForm::kChunked}}};
  }
  return {size_t{256} << 20,  // 5x the H200's L2
          {Shape{2048, 2048}, Shape{8192, 2048}, Shape{2048, 8192}, Shape{4096, 4096},
           Shape{16384, 4096}, Shape{4096, 16384}, Shape{2048, 64}},
          2048,
          8192,
          2048,
          2048,
          2048,
          32,
          {WkvCase{1, 1, WkvForm::kWalk}, WkvCase{1, 512, WkvForm::kWalk},
           WkvCase{1, 512, WkvForm::kChunked}, WkvCase{16, 128, WkvForm::kWalk},
           WkvCase{16, 128, WkvForm::kChunked}},
          {CoreCase{16, 128, WkvForm::kWalk}, CoreCase{1, 2048, WkvForm::kChunked}}};
}

}  // namespace

absl::Status BenchKernels(const DeviceLimits& lim, bool smoke) {
  const KernelSizes sz = SizesFor(smoke);
  MODRWKV_ASSIGN_OR_RETURN(CudaStream stream, CreateStream());
  cudaStream_t st = stream.get();
  std::printf(
      "| kernel | shape | us per launch | GB/s | of the copy bandwidth |\n|---|---|---|---|---|\n");
  MODRWKV_ASSIGN_OR_RETURN(const CublasApi* blas, Cublas());
  cublasHandle_t h = nullptr;
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->Create(&h));
  std::unique_ptr<cublasContext, cublasStatus_t (*)(cublasHandle_t)> owner(h, blas->Destroy);
  MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->SetStream(h, st));
  const size_t kSpan = sz.span;
  for (const Shape sh : sz.gemv) {
    const size_t elems = static_cast<size_t>(sh.out) * sh.in;
    const int copies = static_cast<int>(std::max<size_t>(2, kSpan / (elems * 2)));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> w, AllocDevice<uint16_t>(elems * copies));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> x, AllocDevice<float>(sh.in));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> xh, AllocDevice<uint16_t>(sh.in));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> y, AllocDevice<float>(sh.out));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w.get(), 0x3c, elems * copies * 2, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x.get(), 0, sh.in * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(xh.get(), 0, sh.in * 2, st));
    const std::string shape = absl::StrFormat("%d x %d, 1 row", sh.out, sh.in);
    const double bytes = elems * 2.0;
    auto row = [&](const char* what, double t) {
      std::printf("| %s | %s | %.2f | %.0f | %.0f%% |\n", what, shape.c_str(), t * 1e6,
                  bytes / t / 1e9, 100 * bytes / t / lim.copy_bytes_per_s);
    };
    auto gemv = [&](int i) {
      return LaunchGemvHalf(st, HalfType::kBF16, w.get() + elems * (i % copies), sh.out, sh.in,
                            x.get(), 1, y.get(), false);
    };
    MODRWKV_ASSIGN_OR_RETURN(const OverlapTimes tg, TimeGraphBothWays(st, 4 * copies, gemv));
    SetOverlappedLaunches(true);
    SetEarlyWeightLoads(false);
    absl::StatusOr<double> late = TimeGraph(st, 4 * copies, gemv);
    SetEarlyWeightLoads(true);
    if (!late.ok()) return late.status();
    row("GemvHalf (overlapped)", tg.overlapped);
    row("GemvHalf (overlapped, weights loaded after the wait)", *late);
    row("GemvHalf (plain launches)", tg.plain);
    const float alpha = 1.0f, beta = 0.0f;
    MODRWKV_ASSIGN_OR_RETURN(
        const double tb, TimeGraph(st, 4 * copies, [&](int i) -> absl::Status {
          MODRWKV_CUBLAS_RETURN_IF_ERROR(blas->GemmEx(
              h, CUBLAS_OP_T, CUBLAS_OP_N, sh.out, 1, sh.in, &alpha, w.get() + elems * (i % copies),
              CUDA_R_16BF, sh.in, xh.get(), CUDA_R_16BF, sh.in, &beta, y.get(), CUDA_R_32F, sh.out,
              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          return absl::OkStatus();
        }));
    row("cuBLAS GemmEx (bf16 x bf16)", tb);
  }
  {  // the 1.5B value product (2048 outputs, 8192 inputs) of 1 and 4 rows, input-major, with half
     // and a tenth of the inputs nonzero in each row, against the dense kernel's row above
    const int kOut = sz.sparse_out, kIn = sz.sparse_in;
    constexpr int kRows = 4;
    const size_t elems = static_cast<size_t>(kOut) * kIn;
    const int copies = static_cast<int>(std::max<size_t>(2, kSpan / (elems * 2)));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> w, AllocDevice<uint16_t>(elems * copies));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> x, AllocDevice<float>(kRows * kIn));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> y, AllocDevice<float>(kRows * kOut));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> partial,
                             AllocDevice<float>(SparseRowsScratchFloats(kOut, kIn, kRows)));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<unsigned> tickets,
                             AllocDevice<unsigned>(SparseRowsTickets(kOut)));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w.get(), 0x3c, elems * copies * 2, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(tickets.get(), 0, SparseRowsTickets(kOut) * sizeof(unsigned), st));
    for (const int percent : {50, 10}) {
      std::vector<float> host(static_cast<size_t>(kRows) * kIn);
      uint32_t seed = 12345;
      for (float& v : host) {
        seed = seed * 1664525u + 1013904223u;
        v = (seed >> 8) % 100 < static_cast<uint32_t>(percent) ? 0.5f : 0.0f;
      }
      MODRWKV_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(x.get(), host.data(), host.size() * 4, cudaMemcpyHostToDevice, st));
      MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));  // `host` goes out of scope
      for (const int rows : {1, kRows}) {
        MODRWKV_ASSIGN_OR_RETURN(
            const OverlapTimes t, TimeGraphBothWays(st, 4 * copies, [&](int i) {
              return LaunchSparseRowsHalf(st, HalfType::kBF16, w.get() + elems * (i % copies), kOut,
                                          kIn, x.get(), rows, y.get(), false,
                                          {partial.get(), tickets.get()});
            }));
        const double bytes = elems * 2.0;  // the dense product's, for comparison
        std::printf(
            "| SparseRows (overlapped), %d%% nonzero | %d x %d input-major, %d row(s) | %.2f | "
            "%.0f (dense-equivalent) | %.0f%% |\n",
            percent, kOut, kIn, rows, t.overlapped * 1e6, bytes / t.overlapped / 1e9,
            100 * bytes / t.overlapped / lim.copy_bytes_per_s);
      }
    }
  }
  {  // a decode step's LayerNorm + token shift of one row, C = 2048, 6 mixes, f32 state
    const int C = sz.norm_c;
    constexpr int kMixes = 6;
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> x, AllocDevice<float>(C));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> p, AllocDevice<float>(C * (2 + kMixes)));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> shift, AllocDevice<float>(C));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> out, AllocDevice<float>(C * kMixes));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> slot, AllocDevice<int32_t>(1));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x.get(), 0, C * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.get(), 0, C * (2 + kMixes) * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(shift.get(), 0, C * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(slot.get(), 0, 4, st));
    MODRWKV_ASSIGN_OR_RETURN(const OverlapTimes t, TimeGraphBothWays(st, 64, [&](int) {
                               return LaunchNormShift(st, x.get(), 1, C, p.get(), p.get() + C,
                                                      1e-5f, slot.get(), shift.get(), C,
                                                      p.get() + 2 * C, kMixes, out.get());
                             }));
    std::printf("| NormShift (overlapped) | 1 x %d, %d mixes | %.2f | | |\n", C, kMixes,
                t.overlapped * 1e6);
    std::printf("| NormShift (plain launches) | 1 x %d, %d mixes | %.2f | | |\n", C, kMixes,
                t.plain * 1e6);
  }
  {  // a prefill step's LayerNorm and token shift (6 mixes, bf16 out): 2048 rows of 2048, four
     // channels at a time, and one at a time (the same rows one float off 16-byte alignment)
    const int R = sz.rows_r, C = sz.rows_c;
    constexpr int kMixes = 6;
    const int64_t n = int64_t{R} * C;
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> x, AllocDevice<float>(n + 4));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> y, AllocDevice<float>(n + 4));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> p, AllocDevice<float>(C * (2 + kMixes) + 4));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> shift, AllocDevice<float>(C + 4));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> out, AllocDevice<uint16_t>(n * kMixes + 4));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> prev, AllocDevice<int32_t>(R));
    std::vector<int32_t> host_prev(R);
    for (int r = 0; r < R; ++r) host_prev[r] = r - 1;  // row 0: slot 0's shift state
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(prev.get(), host_prev.data(), R * 4, cudaMemcpyHostToDevice, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x.get(), 0, (n + 4) * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.get(), 0, (C * (2 + kMixes) + 4) * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(shift.get(), 0, (C + 4) * 4, st));
    for (const int skew : {0, 1}) {
      const char* how = skew == 0 ? "4 channels an access" : "1 channel an access";
      MODRWKV_ASSIGN_OR_RETURN(const double ln, TimeGraph(st, 16, [&](int) {
                                 return LaunchLayerNorm(st, x.get() + skew, nullptr, R, C, p.get(),
                                                        p.get() + C, 1e-5f, y.get() + skew);
                               }));
      const double ln_bytes = 2.0 * n * 4;
      std::printf("| LayerNorm, %s | %d x %d | %.2f | %.0f | %.0f%% |\n", how, R, C, ln * 1e6,
                  ln_bytes / ln / 1e9, 100 * ln_bytes / ln / lim.copy_bytes_per_s);
      MODRWKV_ASSIGN_OR_RETURN(const double ts, TimeGraph(st, 16, [&](int) {
                                 return LaunchTokenShift(
                                     st, x.get() + skew, R, C, prev.get(), shift.get(), C,
                                     p.get() + 2 * C, kMixes,
                                     ActivationsOut::Half(HalfType::kBF16, out.get()));
                               }));
      const double ts_bytes = n * 4.0 + kMixes * n * 2.0;  // x once (rows re-read hit L2), out
      std::printf("| TokenShift (bf16 out), %s | %d x %d, %d mixes | %.2f | %.0f | %.0f%% |\n", how,
                  R, C, kMixes, ts * 1e6, ts_bytes / ts / 1e9,
                  100 * ts_bytes / ts / lim.copy_bytes_per_s);
    }
    // The two as LaunchNormShiftRows (one sequence of R rows: its shift state stored too).
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> seq, AllocDevice<int32_t>(2));
    const int32_t host_seq[2] = {R - 1, 0};  // last row, slot
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(seq.get(), host_seq, sizeof(host_seq), cudaMemcpyHostToDevice, st));
    MODRWKV_ASSIGN_OR_RETURN(const double fused, TimeGraph(st, 16, [&](int) {
                               return LaunchNormShiftRows(
                                   st, x.get(), R, C, p.get(), p.get() + C, 1e-5f, prev.get(),
                                   seq.get(), seq.get() + 1, 1, shift.get(), C, p.get() + 2 * C,
                                   kMixes, ActivationsOut::Half(HalfType::kBF16, out.get()));
                             }));
    const double fused_bytes = n * 4.0 + kMixes * n * 2.0;  // x once, out
    std::printf(
        "| NormShiftRows (LayerNorm + token shift, bf16 out) | %d x %d, %d mixes | %.2f | %.0f | "
        "%.0f%% |\n",
        R, C, kMixes, fused * 1e6, fused_bytes / fused / 1e9,
        100 * fused_bytes / fused / lim.copy_bytes_per_s);
  }
  {  // WKV, 32 heads, f32 state: a decode token, a 512-token prompt, 16 prompts of 128 tokens;
     // the prompts token by token (the walk) and in chunks
    const int H = sz.heads, C = H * 64;
    int kMaxSeqs = 0, kMaxRows = 0;
    for (const WkvCase& c : sz.wkv) {
      kMaxSeqs = std::max(kMaxSeqs, c.seqs);
      kMaxRows = std::max(kMaxRows, c.seqs * c.tokens);
    }
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> pool,
                             AllocDevice<float>(int64_t{kMaxSeqs} * C * 64));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> in, AllocDevice<float>(int64_t{C} * 7 * kMaxRows));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> idx, AllocDevice<int32_t>(2 * kMaxSeqs + 1));
    const int64_t plane = int64_t{C} * kMaxRows;
    float* v = in.get();
    // Zero inputs but the decay (0x3f3f3f3f = 0.747: inside the chunked form's range).
    MODRWKV_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(pool.get(), 0, int64_t{kMaxSeqs} * C * 64 * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v, 0, plane * 7 * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v + plane, 0x3f, plane * 4, st));
    for (const WkvCase& c : sz.wkv) {
      std::vector<int32_t> host_idx(2 * c.seqs + 1);  // slots 0..seqs-1, then the offsets
      for (int b = 0; b < c.seqs; ++b) host_idx[b] = b;
      for (int b = 0; b <= c.seqs; ++b) host_idx[c.seqs + b] = b * c.tokens;
      MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(idx.get(), host_idx.data(), host_idx.size() * 4,
                                                   cudaMemcpyHostToDevice, st));
      const int rows = c.seqs * c.tokens;
      MODRWKV_ASSIGN_OR_RETURN(
          const OverlapTimes t, TimeGraphBothWays(st, rows == 1 ? 64 : 4, [&](int) {
            return LaunchWkv7(st, pool.get(), idx.get(), c.seqs, H, idx.get() + c.seqs, rows,
                              c.form, v, v + plane, v + 2 * plane, v + 3 * plane, v + 4 * plane,
                              v + 5 * plane, C, v + 6 * plane, C, C * 64, 64 * 64);
          }));
      const char* form = c.form == WkvForm::kChunked ? "chunked" : "walk";
      for (const auto& [what, seconds] :
           {std::pair{"overlapped", t.overlapped}, std::pair{"plain launches", t.plain}}) {
        std::printf("| Wkv7 %s (%s) | %d x %d tokens x %d heads | %.2f | %.3f us per token | |\n",
                    form, what, c.seqs, c.tokens, H, seconds * 1e6, seconds * 1e6 / c.tokens);
      }
    }
  }
  // A prefill step's time-mixing core x 32 heads (1.5B), a later layer, f32 state, bf16 y: the
  // three kernels (prepare, the recurrence, GroupNorm + gate) and fused, with the bytes each way
  // moves (as the op profile counts them) per second. Walking (16 prompts of 128 tokens): one
  // kernel; chunked (one prompt of 2048): the chunked recurrence on raw rows, then GroupNorm.
  for (const CoreCase& core : sz.cores) {
    const int H = sz.heads, C = H * 64, kSeqs = core.seqs, kTokens = core.tokens;
    const int R = kSeqs * kTokens;
    const int64_t plane = int64_t{C} * R;
    enum { kR, kW, kA, kK, kV, kG, kVFirst, kVGate, kKk, kY, kPlanes };
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> pool, AllocDevice<float>(int64_t{kSeqs} * C * 64));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> in, AllocDevice<float>(plane * kPlanes));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> y_h, AllocDevice<uint16_t>(plane));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<float> params, AllocDevice<float>(int64_t{C} * 8));
    MODRWKV_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> idx, AllocDevice<int32_t>(2 * kSeqs + 1));
    std::vector<int32_t> host_idx(2 * kSeqs + 1);  // slots, then the offsets
    for (int b = 0; b < kSeqs; ++b) host_idx[b] = b;
    for (int b = 0; b <= kSeqs; ++b) host_idx[kSeqs + b] = b * kTokens;
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(idx.get(), host_idx.data(), host_idx.size() * 4,
                                                 cudaMemcpyHostToDevice, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(pool.get(), 0, int64_t{kSeqs} * C * 64 * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(in.get(), 0, plane * kPlanes * 4, st));
    MODRWKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(params.get(), 0, int64_t{C} * 8 * 4, st));
    auto P = [&](int i) { return in.get() + i * plane; };
    auto V = [&](int i) { return params.get() + int64_t{i} * C; };
    const ActivationsOut y_out = ActivationsOut::Half(HalfType::kBF16, y_h.get());
    const int32_t* offsets = idx.get() + kSeqs;
    const bool chunked = core.form == WkvForm::kChunked;
    MODRWKV_ASSIGN_OR_RETURN(
        const double separate, TimeGraph(st, 4, [&](int) -> absl::Status {
          MODRWKV_RETURN_IF_ERROR(LaunchPrepareWkv(st, R, C, P(kW), V(0), P(kA), V(1), P(kK),
                                                   P(kKk), V(2), V(3), P(kV), P(kVFirst), P(kVGate),
                                                   V(4),
                                                   /*first_layer=*/false));
          MODRWKV_RETURN_IF_ERROR(LaunchWkv7(st, pool.get(), idx.get(), kSeqs, H, offsets, R,
                                             core.form, P(kR), P(kW), P(kK), P(kV), P(kKk), P(kA),
                                             C, P(kY), C, C * 64, 64 * 64));
          return LaunchGroupNormGate(st, R, C, static_cast<const float*>(P(kY)), V(6), V(7), P(kR),
                                     P(kK), V(5), P(kV), P(kG), y_out);
        }));
    const TimeMixRows rows{P(kR), P(kW), P(kA), P(kK), P(kV), P(kVFirst), P(kVGate), P(kG)};
    const TimeMixParams p{V(0), V(1), V(2), V(3), V(4), V(5), V(6), V(7)};
    MODRWKV_ASSIGN_OR_RETURN(
        const double fused, TimeGraph(st, 4, [&](int) -> absl::Status {
          if (!chunked) {
            return LaunchWkv7Prefill(st, pool.get(), idx.get(), kSeqs, H, offsets, C * 64, 64 * 64,
                                     rows, p, /*first_layer=*/false, y_out);
          }
          MODRWKV_RETURN_IF_ERROR(LaunchWkv7ChunkedPrefill(
              st, pool.get(), idx.get(), kSeqs, H, offsets, C * 64, 64 * 64, rows, p,
              /*first_layer=*/false, P(kY), P(kKk), P(kV)));
          return LaunchGroupNormGate(st, R, C, static_cast<const float*>(P(kY)), V(6), V(7), P(kR),
                                     P(kKk), V(5), P(kV), P(kG), y_out);
        }));
    // f32 rows: prepare 11 (w, a, k, v in and out, kk out, v_first and the gate in), the
    // recurrence 7, GroupNorm + gate 5 and y in bf16; fused walking: 8 in and y; fused chunked:
    // 7 in and 3 out, then GroupNorm's 5 and y. Each: the states read and written.
    const double state = 2.0 * kSeqs * H * 64 * 64 * 4, row = plane * 4.0;
    const double separate_bytes = (11 + 7 + 5) * row + row / 2 + state;
    const double fused_bytes = (chunked ? 10 + 5 : 8) * row + row / 2 + state;
    const char* form = chunked ? "chunked" : "walk";
    for (const auto& [what, seconds, bytes] :
         {std::tuple{"three kernels", separate, separate_bytes},
          std::tuple{chunked ? "fused (Wkv7ChunkedPrefill + GroupNormGate)" : "fused (Wkv7Prefill)",
                     fused, fused_bytes}}) {
      std::printf(
          "| Time-mixing core (%s), %s | %d x %d tokens x %d heads | %.2f | %.0f (%.0f MB) | "
          "%.0f%% |\n",
          form, what, kSeqs, kTokens, H, seconds * 1e6, bytes / seconds / 1e9, bytes / 1e6,
          100 * bytes / seconds / lim.copy_bytes_per_s);
    }
  }
  MODRWKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  std::printf("\n");
  return absl::OkStatus();
}

}  // namespace modrwkv::cuda::bench

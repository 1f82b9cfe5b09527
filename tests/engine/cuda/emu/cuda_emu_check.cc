// The CUDA emulator's own semantics (README.md here), which every emulated GPU test relies on:
// warp shuffles, votes and matches exchange what a warp's lanes hold at the same instruction, back
// to back and in masks of part of a warp, lanes that have returned do not hold a meeting up, a
// read of another thread's shared memory without a barrier sees the old value in one of the two
// thread orders, a block's read of what another block writes in one of two block orders, a
// kernel's reads before its griddepcontrol.wait run before its predecessor (PDL), an
// asynchronous copy lands only when its thread waits for it, and a barrier no thread can pass is
// reported. Each kernel's result is compared with the same operations done warp-wide in lock step
// on the host.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/cuda/async_copy.cuh"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/launch.cuh"
#include "engine/cuda/launch.h"
#include "gtest/gtest.h"
#include "tests/engine/cuda/device_test_util.h"

namespace modrwkv::cuda {
namespace {

using testing_util::Download;
using testing_util::Upload;

constexpr unsigned kFull = 0xffffffffu;
using Warp = std::array<uint32_t, 32>;

// Lock-step references of the shuffles: lane l of the result holds v[src(l)].
template <typename Src>
Warp Gather(const Warp& v, Src src) {
  Warp out;
  for (int l = 0; l < 32; ++l) out[l] = v[src(l)];
  return out;
}
Warp Xor(const Warp& v, int m, int width = 32) {
  return Gather(v, [&](int l) { return (l ^ m) < (l / width + 1) * width ? l ^ m : l; });
}
Warp Down(const Warp& v, int d, int width = 32) {
  return Gather(v, [&](int l) { return l + d < (l / width + 1) * width ? l + d : l; });
}
Warp Up(const Warp& v, int d, int width = 32) {
  return Gather(v, [&](int l) { return l - d >= l / width * width ? l - d : l; });
}

// Rounds of every kind of shuffle, each consuming the one before, in the full mask: a lane that
// published again before another had read (one meeting per exchange) would corrupt the next
// round.
__global__ void ShuffleRounds(const uint32_t* in, uint32_t* out, int rounds) {
  WaitForPredecessor();
  const int lane = threadIdx.x % 32;
  uint32_t v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int r = 0; r < rounds; ++r) {
    v += 3u * __shfl_xor_sync(kFull, v, 1 + r % 31);
    v ^= __shfl_down_sync(kFull, v, r % 7 + 1);
    v += __shfl_up_sync(kFull, v, r % 5 + 1, 16);
    v = __shfl_sync(kFull, v, (lane * 7 + r) % 32) + static_cast<uint32_t>(lane);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

Warp ShuffleRoundsReference(Warp v, int rounds) {
  for (int r = 0; r < rounds; ++r) {
    const Warp x = Xor(v, 1 + r % 31);
    for (int l = 0; l < 32; ++l) v[l] += 3u * x[l];
    const Warp d = Down(v, r % 7 + 1);
    for (int l = 0; l < 32; ++l) v[l] ^= d[l];
    const Warp u = Up(v, r % 5 + 1, 16);
    for (int l = 0; l < 32; ++l) v[l] += u[l];
    const Warp g = Gather(v, [&](int l) { return (l * 7 + r) % 32; });
    for (int l = 0; l < 32; ++l) v[l] = g[l] + static_cast<uint32_t>(l);
  }
  return v;
}

// n values mixed from `seed` (a splitmix-style hash of each index).
std::vector<uint32_t> Values(int n, uint32_t seed) {
  std::vector<uint32_t> v(n);
  for (int i = 0; i < n; ++i) {
    uint32_t x = seed * 2654435761u + static_cast<uint32_t>(i) * 0x9e3779b9u;
    x = (x ^ (x >> 16)) * 0x85ebca6bu;
    v[i] = x ^ (x >> 13);
  }
  return v;
}

// Runs `kernel` over `blocks` blocks of `threads` and returns its output.
template <typename... Args>
std::vector<uint32_t> RunKernel(void (*kernel)(const uint32_t*, uint32_t*, Args...), int blocks,
                                int threads, const std::vector<uint32_t>& in, Args... args) {
  DeviceBuffer<uint32_t> d_in = Upload(in);
  DeviceBuffer<uint32_t> d_out = Upload(std::vector<uint32_t>(blocks * threads, 0));
  EXPECT_TRUE(Launch("emulator test", kernel, dim3(blocks), dim3(threads), 0, nullptr, d_in.get(),
                     d_out.get(), args...)
                  .ok());
  return Download(d_out, blocks * threads);
}

TEST(CudaEmulatorTest, ShufflesBackToBackSeeTheirRoundsValues) {
  const int blocks = 2, threads = 64, rounds = 40;  // both thread orders, two warps each
  const std::vector<uint32_t> in = Values(blocks * threads, 7);
  const std::vector<uint32_t> got = RunKernel(ShuffleRounds, blocks, threads, in, rounds);
  for (int w = 0; w < blocks * threads / 32; ++w) {
    Warp v;
    std::copy_n(in.begin() + w * 32, 32, v.begin());
    const Warp want = ShuffleRoundsReference(v, rounds);
    for (int l = 0; l < 32; ++l)
      EXPECT_EQ(got[w * 32 + l], want[l]) << "warp " << w << " lane " << l;
  }
}

// Each half of the warp exchanges in its own mask (16-wide shuffles and a half-warp vote), then
// the whole warp: meetings of different masks must not see each other's values.
__global__ void HalfWarpsThenWhole(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  const int lane = threadIdx.x % 32;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  uint32_t v = in[threadIdx.x];
  for (int r = 0; r < 3; ++r) {
    v += __shfl_xor_sync(half, v, 1 << r);
    v = __shfl_down_sync(half, v, 3, 16) * 5u + 1u;
  }
  const unsigned odd = __ballot_sync(half, v & 1u);
  v = __shfl_xor_sync(kFull, v, 16) + odd;
  out[threadIdx.x] = v;
}

TEST(CudaEmulatorTest, HalfWarpMasksMeetApart) {
  const std::vector<uint32_t> in = Values(32, 11);
  const std::vector<uint32_t> got = RunKernel(HalfWarpsThenWhole, 1, 32, in);
  Warp v;
  std::copy_n(in.begin(), 32, v.begin());
  for (int r = 0; r < 3; ++r) {
    const Warp x = Xor(v, 1 << r, 16);
    for (int l = 0; l < 32; ++l) v[l] += x[l];
    const Warp d = Down(v, 3, 16);
    for (int l = 0; l < 32; ++l) v[l] = d[l] * 5u + 1u;
  }
  unsigned odd[2] = {0, 0};
  for (int l = 0; l < 32; ++l) {
    if (v[l] & 1u) odd[l / 16] |= 1u << l;
  }
  const Warp x = Xor(v, 16);
  for (int l = 0; l < 32; ++l) EXPECT_EQ(got[l], x[l] + odd[l / 16]) << "lane " << l;
}

// A ballot and a match of every lane's value.
__global__ void VotesAndMatches(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  const uint32_t v = in[threadIdx.x];
  const unsigned small = __ballot_sync(kFull, v % 3 == 0);
  const unsigned same = __match_any_sync(kFull, v % 4);
  out[threadIdx.x] = small ^ (same * 3u);
}

TEST(CudaEmulatorTest, BallotsAndMatchesSeeEveryLane) {
  const std::vector<uint32_t> in = Values(32, 5);
  const std::vector<uint32_t> got = RunKernel(VotesAndMatches, 1, 32, in);
  unsigned small = 0;
  for (int l = 0; l < 32; ++l) small |= (in[l] % 3 == 0 ? 1u : 0u) << l;
  ASSERT_NE(small, 0u);
  ASSERT_NE(small, kFull);
  for (int l = 0; l < 32; ++l) {
    unsigned same = 0;
    for (int o = 0; o < 32; ++o) same |= (in[o] % 4 == in[l] % 4 ? 1u : 0u) << o;
    EXPECT_EQ(got[l], small ^ (same * 3u)) << "lane " << l;
  }
}

// The upper half of the warp returns at once; the lower half shuffles in the full mask (defined
// in CUDA: exited lanes of the mask are not waited for). In the first block the lower lanes
// arrive before the upper ones return (the last return completes the meeting), in the second
// after.
__global__ void ShuffleAfterHalfReturned(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  const int lane = threadIdx.x % 32;
  if (lane >= 16) return;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __shfl_xor_sync(kFull, in[i], 1) + 1000u;
}

TEST(CudaEmulatorTest, LanesThatReturnedDoNotHoldAShuffleUp) {
  const std::vector<uint32_t> in = Values(64, 3);
  const std::vector<uint32_t> got = RunKernel(ShuffleAfterHalfReturned, 2, 32, in);
  for (int b = 0; b < 2; ++b) {
    for (int l = 0; l < 32; ++l) {
      const int i = b * 32 + l;
      EXPECT_EQ(got[i], l < 16 ? in[b * 32 + (l ^ 1)] + 1000u : 0u)
          << "block " << b << " lane " << l;
    }
  }
}

// Each thread reads its neighbour's shared cell, with or without a barrier after the writes.
__global__ void ReadNeighbour(const uint32_t* in, uint32_t* out, bool barrier) {
  WaitForPredecessor();
  __shared__ uint32_t cell[64];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  cell[threadIdx.x] = in[i];
  if (barrier) __syncthreads();
  out[i] = cell[(threadIdx.x + 1) % blockDim.x];
}

TEST(CudaEmulatorTest, AMissingBarrierReadsTheOldValueInOneOfTheOrders) {
  // Threads of block b that did not read their neighbour's value of `in`.
  auto wrong_in_block = [](const std::vector<uint32_t>& got, const std::vector<uint32_t>& in,
                           int b) {
    int wrong = 0;
    for (int t = 0; t < 64; ++t) wrong += got[b * 64 + t] != in[b * 64 + (t + 1) % 64];
    return wrong;
  };
  const std::vector<uint32_t> in = Values(128, 9);
  const std::vector<uint32_t> with = RunKernel(ReadNeighbour, 2, 64, in, true);
  EXPECT_EQ(wrong_in_block(with, in, 0), 0);
  EXPECT_EQ(wrong_in_block(with, in, 1), 0);
  // Threads in index order (block 0): each reads its neighbour's cell before the neighbour writes
  // it, all but the last (whose neighbour is thread 0); in reverse order (block 1) only the last
  // thread, the first to run, reads before thread 0 writes. (Other values than the run above's,
  // so that a cell left by either run's blocks, in whichever order they ran, is wrong here.)
  const std::vector<uint32_t> other = Values(128, 10);
  const std::vector<uint32_t> without = RunKernel(ReadNeighbour, 2, 64, other, false);
  EXPECT_EQ(wrong_in_block(without, other, 0), 63);
  EXPECT_EQ(wrong_in_block(without, other, 1), 1);
}

// Block b copies what block b - 1 wrote to `out` (block 0 its input): with no grid-wide protocol
// between the blocks, what it finds depends on which ran first.
__global__ void ReadPreviousBlock(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  if (threadIdx.x != 0) return;
  const int b = static_cast<int>(blockIdx.x);
  out[b] = b == 0 ? in[0] : out[b - 1] + 1u;
}

TEST(CudaEmulatorTest, LaunchesRunTheirBlocksInAlternatingOrders) {
  // Two launches in a row on fresh outputs (zeros): one runs the blocks in index order and
  // propagates block 0's value; the other runs them backwards and each block finds a zero.
  const std::vector<uint32_t> in = {100};
  std::vector<std::vector<uint32_t>> runs;
  for (int launch = 0; launch < 2; ++launch)
    runs.push_back(RunKernel(ReadPreviousBlock, 4, 32, in));
  const std::vector<uint32_t> forward = {100, 101, 102, 103}, backward = {100, 1, 1, 1};
  auto first4 = [](const std::vector<uint32_t>& v) {
    return std::vector<uint32_t>(v.begin(), v.begin() + 4);
  };
  EXPECT_TRUE((first4(runs[0]) == forward && first4(runs[1]) == backward) ||
              (first4(runs[0]) == backward && first4(runs[1]) == forward))
      << runs[0][1] << " " << runs[1][1];
}

// Each thread copies its value into shared memory with cp.async; `wait` says whether it waits
// for its copy before the barrier. After the barrier each thread reads its neighbour's cell.
__global__ void StagedNeighbour(const uint32_t* in, uint32_t* out, bool wait) {
  WaitForPredecessor();
  __shared__ __align__(16) float cell[64];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  CpAsync4(&cell[threadIdx.x], reinterpret_cast<const float*>(in) + i);
  if (wait) CpAsyncWaitAll();
  __syncthreads();
  const float got = cell[(threadIdx.x + 1) % blockDim.x];
  uint32_t bits;
  std::memcpy(&bits, &got, 4);
  out[i] = bits;
}

TEST(CudaEmulatorTest, AnAsyncCopyLandsAtItsThreadsWait) {
  const std::vector<uint32_t> in = Values(128, 13);
  const std::vector<uint32_t> waited = RunKernel(StagedNeighbour, 2, 64, in, true);
  const std::vector<uint32_t> not_waited = RunKernel(StagedNeighbour, 2, 64, in, false);
  int in_flight[2] = {0, 0};  // reads that found NaN bits, per block
  for (int i = 0; i < 128; ++i) {
    const int b = i / 64, t = i % 64;
    EXPECT_EQ(waited[i], in[b * 64 + (t + 1) % 64]) << i;
    in_flight[b] += not_waited[i] == 0xffffffffu;
  }
  // Without the copier's wait a copy lands only when its thread returns: in index order (block 0)
  // every thread but the last reads a neighbour that has not returned; in reverse order (block 1)
  // only the first to run, thread 63, whose neighbour is thread 0.
  EXPECT_EQ(in_flight[0], 63);
  EXPECT_EQ(in_flight[1], 1);
}

// A kernel and two successors, one reading its predecessor's output before its
// griddepcontrol.wait (which the launch contract forbids) and one after.
__global__ void AddOne(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[i] + 1u;
}
__global__ void ReadBeforeWait(const uint32_t* in, uint32_t* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t v = in[i];
  WaitForPredecessor();
  out[i] = v;
}
__global__ void ReadAfterWait(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[i];
}

// Runs AddOne(in -> mid) then `successor`(mid -> out) on one stream; returns out.
std::vector<uint32_t> AfterAddOne(void (*successor)(const uint32_t*, uint32_t*),
                                  const std::vector<uint32_t>& in) {
  const int n = static_cast<int>(in.size());
  DeviceBuffer<uint32_t> d_in = Upload(in);
  DeviceBuffer<uint32_t> mid = Upload(std::vector<uint32_t>(n, 0));
  DeviceBuffer<uint32_t> out = Upload(std::vector<uint32_t>(n, 0));
  EXPECT_TRUE(
      Launch("AddOne", AddOne, dim3(n / 32), dim3(32), 0, nullptr, d_in.get(), mid.get()).ok());
  EXPECT_TRUE(
      Launch("successor", successor, dim3(n / 32), dim3(32), 0, nullptr, mid.get(), out.get())
          .ok());
  return Download(out, n);
}

TEST(CudaEmulatorTest, AnOverlappedLaunchStartsBeforeItsPredecessor) {
  ASSERT_TRUE(OverlappedLaunches());  // the emulated device is sm_90
  const std::vector<uint32_t> in = Values(96, 17);
  std::vector<uint32_t> plus_one(in);
  for (uint32_t& v : plus_one) ++v;
  // A read after the wait sees the predecessor's writes in every block.
  EXPECT_EQ(AfterAddOne(ReadAfterWait, in), plus_one);
  // A read before it: block 0 ran up to its wait before AddOne ran at all, and read the zeros;
  // the other blocks started after it.
  const std::vector<uint32_t> early = AfterAddOne(ReadBeforeWait, in);
  for (int i = 0; i < 96; ++i) EXPECT_EQ(early[i], i < 32 ? 0u : plus_one[i]) << i;
  // Without programmatic dependent launch the launches are in stream order.
  SetOverlappedLaunches(false);
  EXPECT_EQ(AfterAddOne(ReadBeforeWait, in), plus_one);
  SetOverlappedLaunches(true);
}

// Thread 0 waits in a warp meeting with lane 1, which waits at the block's barrier for thread 0.
__global__ void CrossedBarriers(const uint32_t*, uint32_t*) {
  if (threadIdx.x == 0) {
    __syncwarp(0x3u);
  } else {
    __syncthreads();
  }
}

TEST(CudaEmulatorDeathTest, ABarrierNoThreadCanPassIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        (void)RunKernel(CrossedBarriers, 1, 64, std::vector<uint32_t>(64, 0));
        (void)cudaDeviceSynchronize();
      },
      "deadlock in block \\(0,0,0\\).*thread 0 at a warp operation");
}

// A 16-byte cp.async from an address 4 bytes past an aligned one: a GPU faults.
__global__ void MisalignedCopy(const uint32_t* in, uint32_t* out) {
  WaitForPredecessor();
  __shared__ uint4 cell[1];
  CpAsync16(cell, reinterpret_cast<const uint4*>(in + 1));
  CpAsyncWaitAll();
  out[threadIdx.x] = cell[0].x;
}

TEST(CudaEmulatorDeathTest, AMisalignedAsyncCopyIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        (void)RunKernel(MisalignedCopy, 1, 1, std::vector<uint32_t>(8, 0));
        (void)cudaDeviceSynchronize();
      },
      "cp.async of 16 bytes .* in block \\(0,0,0\\), thread \\(0,0,0\\): the size must be");
}

}  // namespace
}  // namespace modrwkv::cuda

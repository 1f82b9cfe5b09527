// Sampling on the device: the CUDA implementation of engine/sampling/device_draw.h (its
// ReferenceDeviceDraw is the CPU twin this kernel is tested against), so that a sequence with
// temperature, top-k / top-p / min-p, penalties, bias or bans gets its token without its logits
// being copied to the host.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "engine/sampling/device_draw.h"

namespace modrwkv::cuda {

// The most logits per row the kernel takes (1024 chunks of 1024).
constexpr int kMaxDrawVocab = 1 << 20;

// For each row r in [0, rows): applies edits[edit_offsets[r] .. edit_offsets[r+1]) to
// logits[r][0..V), then draws tokens[r] as draws[r] says (device_draw.h, steps 1-5); the logits
// are left as edited. Rows whose draw asks for logprobs
// (logprobs_top_n >= 0) get them in logprobs[r] (may be null when none does). All pointers are
// device pointers.
//
// Probability masses are accumulated in 2^-40 fixed point (64-bit integer sums): deterministic
// whatever the order of the additions, so a row's token depends only on its logits and draw. A
// token whose probability relative to the top one is below 2^-41 is never drawn (the Sampler's
// double sums would, with a chance below 1e-12 per step).
absl::Status LaunchDrawRows(cudaStream_t stream, float* logits, int rows, int V,
                            const DeviceDraw* draws, const int32_t* edit_offsets,
                            const LogitEdit* edits, int32_t* tokens,
                            DeviceLogprobs* logprobs = nullptr);

}  // namespace modrwkv::cuda

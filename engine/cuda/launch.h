// Whether kernels are launched with programmatic dependent launch (PDL, compute capability 9.0+):
// a kernel may then start while its predecessor in the stream is still running, do what does not
// depend on it (issue its weights' loads into L2) and wait for it only where it must
// (launch.cuh). On a few-row decode step, where a layer is a chain of a dozen kernels, most of
// them too short to reach the memory bandwidth alone, the next product's weights stream in while
// the small kernels before it run, instead of after each kernel's drain and the next one's ramp.
#pragma once

namespace modrwkv::cuda {

// Process-wide switch (default on): launches use PDL where the current device supports it. The
// results are the same either way (every kernel waits for its predecessor before it reads what
// the predecessor wrote); the benchmark and the tests turn it off to measure and check that.
void SetOverlappedLaunches(bool on);

// True when a launch on the current device now uses PDL: the switch is on and the device's
// compute capability is 9.0 or newer (queried once per device).
bool OverlappedLaunches();

// Process-wide switch (default on): the few-row products (gemv_half.cuh) issue their first
// weight loads before waiting for their predecessor, so that the weights stream while the small
// kernel before them finishes. The same bits either way; the benchmark turns it off to measure
// what it saves.
void SetEarlyWeightLoads(bool on);
bool EarlyWeightLoads();

}  // namespace modrwkv::cuda

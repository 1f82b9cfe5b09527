// The CUDA emulator's launch executor (executor.cc), as the runtime (cuda_emu.cc) uses it: a
// kernel launch runs block by block on the calling thread, a block's threads as fibers.
#pragma once

#include <functional>
#include <memory>

#include "tests/engine/cuda/emu/cuda_emu.h"

namespace cuda_emu {

// A kernel launch as queued: its shape, its body (the kernel with its parameters bound), and
// whether it may start while the kernel before it in the stream runs (programmatic dependent
// launch, cudaLaunchAttributeProgrammaticStreamSerialization).
struct KernelLaunch {
  LaunchShape shape;
  std::function<void()> body;
  bool overlapped = false;
};

// Runs every block of the launch (the caller holds the device mutex).
void RunLaunch(const KernelLaunch& launch);

// Called when a kernel of `predecessor_kernel` is about to run and `next` is queued right behind
// it: an overlapped `next` has its first block run up to its griddepcontrol.wait now (executor.cc
// says when it does not).
void StartEarly(std::shared_ptr<const KernelLaunch> next, const void* predecessor_kernel);

}  // namespace cuda_emu

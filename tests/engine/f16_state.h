// An f16 state pool emulated on any backend: after each step, the slot's state is rounded to f16
// and written back. A CUDA pool with ModelOptions::StateType::kF16 rounds exactly there (its
// kernels compute in f32 and store f16 once per step), so this is the reference its GPU test
// compares against, and how the accuracy cost of f16 states is measured without a GPU.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "engine/base/tensor.h"
#include "engine/model/model.h"

namespace modrwkv {

inline absl::Status RoundSlotToF16(Model& model, int slot) {
  std::vector<float> state(static_cast<size_t>(model.config().StateFloats()));
  if (absl::Status s = model.ReadSlot(slot, absl::MakeSpan(state)); !s.ok()) return s;
  for (float& v : state) v = F16ToF32(F32ToF16(v));
  return model.WriteSlot(slot, state);
}

}  // namespace modrwkv

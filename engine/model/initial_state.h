// A trained initial state ("state tuning", RWKV-PEFT's train_type=state): a sequence starts from
// it instead of the zero state, which steers the model (a persona, a task, a format) without
// touching its weights. Only the WKV matrices are trained; the token-shift states start at zero.
#pragma once

#include <string>
#include <vector>

namespace modrwkv {

// Immutable once built; shared by every request that starts from it (std::shared_ptr<const>).
struct InitialState {
  std::string name;          // what requests call it (server flags), or the file it came from
  std::vector<float> state;  // the Model's canonical state (ModelConfig::StateFloats() floats)
};

}  // namespace modrwkv

// Sizes of an RWKV7 model, all inferred from checkpoint tensor shapes.
#pragma once

#include <cstdint>
#include <string>

namespace modrwkv {

struct ModelConfig {
  int n_layer = 0;
  int n_embd = 0;      // C
  int n_head = 0;      // H = C / head_size
  int head_size = 64;  // N
  int vocab_size = 0;  // V
  int ffn_size = 0;    // F (4C in released models)
  int d_decay = 0;     // LoRA ranks: w, a, v, g
  int d_aaa = 0;
  int d_mv = 0;
  int d_gate = 0;

  // f32 floats of one sequence's state: per layer att_shift[C] + wkv[H][N][N] + ffn_shift[C].
  int64_t StateFloatsPerLayer() const {
    return 2LL * n_embd + static_cast<int64_t>(n_head) * head_size * head_size;
  }
  int64_t StateFloats() const { return StateFloatsPerLayer() * n_layer; }
  int64_t StateBytes() const { return StateFloats() * 4; }

  std::string ToString() const;
};

}  // namespace modrwkv

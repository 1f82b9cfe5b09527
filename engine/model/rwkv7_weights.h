// Finds and validates the tensors of an RWKV7 checkpoint, under BlinkDL or Hugging Face "fla"
// names, and infers every size from their shapes. Backends build their own weight layout from
// the result; nothing is copied here.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"
#include "engine/model/model_config.h"

namespace modrwkv {

// A tensor in the checkpoint. Matrices are described in the Linear convention [out, in]:
// `transposed` means the file stores it as [in, out] (BlinkDL's LoRA matrices).
struct WeightRef {
  const TensorView* view = nullptr;
  bool transposed = false;
  std::string canonical_name;  // BlinkDL name, for messages

  bool present() const { return view != nullptr; }
};

struct Rwkv7LayerRefs {
  WeightRef ln1_w, ln1_b, ln2_w, ln2_b;
  WeightRef x_r, x_w, x_k, x_v, x_a, x_g;    // [C]
  WeightRef w0, a0, v0, k_k, k_a;            // [C]; v0 absent in layer 0 under fla names
  WeightRef r_k;                             // [H*N]
  WeightRef w1, w2, a1, a2, v1, v2, g1, g2;  // LoRA: x1 [D, C], x2 [C, D] as [out, in]
  WeightRef wr, wk, wv, wo;                  // [C, C]
  WeightRef lnx_w, lnx_b;                    // [C]
  WeightRef ffn_x_k;                         // [C]
  WeightRef ffn_key, ffn_value;              // [F, C], [C, F]
};

struct Rwkv7Refs {
  ModelConfig config;
  DType matrix_dtype = DType::kF32;  // dtype of the large matrices in the file
  bool fla_names = false;
  WeightRef emb;  // [V, C] (a row table, not a matrix product)
  WeightRef ln0_w, ln0_b, ln_out_w, ln_out_b;
  WeightRef head;  // [V, C]
  std::vector<Rwkv7LayerRefs> layers;
  int64_t parameter_count = 0;  // of the tensors the model uses
};

// Errors name the tensor and the expected shape, e.g.
// "tensor blocks.3.att.key.weight has shape [768,512], expected [768,768]".
absl::StatusOr<Rwkv7Refs> ResolveRwkv7(const std::map<std::string, TensorView>& tensors);

// Identifies the weights (names, shapes, dtypes and sampled bytes of every tensor the model uses)
// so that a state exported from one server is only imported by a server with the same model.
uint64_t FingerprintRwkv7(const Rwkv7Refs& refs);

}  // namespace modrwkv

// A LayerStackRunner that runs the layers it is given on the CPU, from its own copy as a GPU
// runner holds its own: tests that an encoder hands a runner the layers and the shape its CPU
// loop runs, and uses what the runner returns (the same arithmetic, so bit for bit the same).
#pragma once

#include <memory>
#include <vector>

#include "encoders/vision/transformer_ops.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

class CpuLayerStack final : public LayerStackRunner {
 public:
  CpuLayerStack(absl::Span<const EncoderLayerWeights> layers, const EncoderLayerShape& shape)
      : shape_(shape) {
    for (const EncoderLayerWeights& w : layers) {
      EncoderLayerWeights c;
      c.ln1_w = w.ln1_w, c.ln1_b = w.ln1_b, c.ln2_w = w.ln2_w, c.ln2_b = w.ln2_b;
      c.qkv = Copy(w.qkv), c.qkv_b = w.qkv_b, c.out = Copy(w.out), c.out_b = w.out_b;
      c.fc1 = Copy(w.fc1), c.fc1_b = w.fc1_b, c.fc2 = Copy(w.fc2), c.fc2_b = w.fc2_b;
      layers_.push_back(std::move(c));
    }
  }
  absl::Status Run(float* x, int batch) const override {
    ++runs;
    cpu::ThreadPool pool(2);
    cpu::LinearRunner lin(&pool);
    EncoderScratch scratch(shape_, batch * shape_.tokens, pool.size());
    for (const EncoderLayerWeights& l : layers_) {
      RunPreLnLayer(l, shape_, batch, x, &scratch, &pool, &lin);
    }
    return absl::OkStatus();
  }
  int layers() const { return static_cast<int>(layers_.size()); }
  mutable int runs = 0;

 private:
  static cpu::Matrix Copy(const cpu::Matrix& m) {  // f32 weights: exact
    const std::vector<float> w = cpu::UnpackMatrix(m);
    const TensorView v{"w", DType::kF32, {m.rows, m.cols}, w.data(), w.size() * 4};
    return cpu::MakeMatrix(v, false, m.type, cpu::Layout::kPanels);
  }
  EncoderLayerShape shape_;
  std::vector<EncoderLayerWeights> layers_;
};

// A factory making CpuLayerStacks; *made points at the last one made.
inline LayerStackFactory CpuLayerStackFactory(const CpuLayerStack** made) {
  return
      [made](absl::Span<const EncoderLayerWeights> layers,
             const EncoderLayerShape& shape) -> absl::StatusOr<std::unique_ptr<LayerStackRunner>> {
        auto s = std::make_unique<CpuLayerStack>(layers, shape);
        *made = s.get();
        return std::unique_ptr<LayerStackRunner>(std::move(s));
      };
}

}  // namespace modrwkv::encoders

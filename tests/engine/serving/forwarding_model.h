// A Model that forwards every call to another one: tests derive from it to make a chosen call
// fail on demand (scheduler_test.cc, state_pool_test.cc) and leave the rest as the real model does.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/model/model.h"

namespace modrwkv {

class ForwardingModel : public Model {
 public:
  explicit ForwardingModel(std::unique_ptr<Model> inner) : inner_(std::move(inner)) {}
  const ModelDescription& info() const override { return inner_->info(); }
  int num_slots() const override { return inner_->num_slots(); }
  absl::Status Step(absl::Span<const StepEntry> entries,
                    std::vector<StepResult>* results) override {
    return inner_->Step(entries, results);
  }
  absl::Status ResetSlot(int slot) override { return inner_->ResetSlot(slot); }
  absl::Status CopySlot(int src, int dst) override { return inner_->CopySlot(src, dst); }
  absl::Status ReadSlot(int slot, absl::Span<float> out) const override {
    return inner_->ReadSlot(slot, out);
  }
  absl::Status WriteSlot(int slot, absl::Span<const float> in) override {
    return inner_->WriteSlot(slot, in);
  }
  absl::Status Health() const override { return inner_->Health(); }

 private:
  std::unique_ptr<Model> inner_;
};

}  // namespace modrwkv

#include "engine/batch_policy.h"

#include <algorithm>

namespace modrwkv {

std::vector<StepSlice> PlanStep(const std::vector<SequenceLoad>& running,
                                const BatchPolicyOptions& options) {
  std::vector<StepSlice> plan;
  int decodes = 0;
  bool any_prefill = false;
  for (size_t i = 0; i < running.size(); ++i) {
    if (running[i].prefill_remaining == 0) {
      plan.push_back({static_cast<int>(i), 1});
      ++decodes;
    } else {
      any_prefill = true;
    }
  }
  if (!any_prefill) return plan;
  int budget = std::max(options.max_step_tokens - decodes, options.min_prefill_rows);
  for (size_t i = 0; i < running.size() && budget > 0; ++i) {
    const int want = running[i].prefill_remaining;
    if (want == 0) continue;
    const int rows = std::min(want, budget);
    plan.push_back({static_cast<int>(i), rows});
    budget -= rows;
  }
  return plan;
}

}  // namespace modrwkv

#include "engine/serving/batch_policy.h"

#include <algorithm>

namespace modrwkv {

std::vector<StepSlice> PlanStep(const std::vector<SequenceLoad>& running,
                                const BatchPolicyOptions& options) {
  std::vector<StepSlice> plan;
  std::vector<int> prefilling;  // indices, in admission order
  for (size_t i = 0; i < running.size(); ++i) {
    if (running[i].prefill_remaining == 0) {
      plan.push_back({static_cast<int>(i), 1});
    } else {
      prefilling.push_back(static_cast<int>(i));
    }
  }
  if (prefilling.empty()) return plan;
  const int decodes = static_cast<int>(plan.size());
  int budget = std::max(options.max_step_tokens - decodes, options.min_prefill_rows);

  // Max-min fair shares ("water filling"): visit prompts from the least remaining to the most
  // (admission order among equals); each takes what it needs or an equal share of what is left,
  // whichever is less. A short prompt finishes in one step whatever is prefilling next to it,
  // and every long prompt keeps at least an equal share, so none starves.
  std::vector<int> order = prefilling;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return running[a].prefill_remaining < running[b].prefill_remaining;
  });
  std::vector<int> rows(running.size(), 0);
  int left = static_cast<int>(order.size());
  for (int i : order) {
    if (budget == 0) break;
    const int share = std::max(1, budget / left);
    rows[i] = std::min(running[i].prefill_remaining, share);
    budget -= rows[i];
    --left;
  }
  for (int i : prefilling) {
    if (rows[i] > 0) plan.push_back({i, rows[i]});
  }
  return plan;
}

}  // namespace modrwkv

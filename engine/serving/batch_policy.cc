#include "engine/serving/batch_policy.h"

#include <algorithm>
#include <functional>
#include <numeric>

#include "absl/container/flat_hash_map.h"

namespace modrwkv {

std::vector<int> WaterFill(const std::vector<int>& demands, int budget) {
  std::vector<int> order(demands.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return demands[a] < demands[b]; });
  std::vector<int> shares(demands.size(), 0);
  int left = static_cast<int>(order.size());
  for (int i : order) {
    if (budget <= 0) break;
    shares[i] = std::min(demands[i], std::max(1, budget / left));
    budget -= shares[i];
    --left;
  }
  return shares;
}

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

  // Priorities, highest first; each level's prompts grouped by caller in order of first
  // appearance, so equal demands keep admission order at both levels.
  std::vector<int> levels;
  for (int i : prefilling) levels.push_back(running[i].priority);
  std::sort(levels.begin(), levels.end(), std::greater<int>());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());

  std::vector<int> rows(running.size(), 0);
  for (int level : levels) {
    if (budget <= 0) break;
    std::vector<std::vector<int>> callers;  // each caller's prompts at this level
    absl::flat_hash_map<int, size_t> caller_index;
    for (int i : prefilling) {
      if (running[i].priority != level) continue;
      auto [at, added] = caller_index.try_emplace(running[i].caller, callers.size());
      if (added) callers.emplace_back();
      callers[at->second].push_back(i);
    }
    std::vector<int> demands;
    for (const std::vector<int>& prompts : callers) {
      int sum = 0;
      for (int i : prompts) sum += running[i].prefill_remaining;
      demands.push_back(sum);
    }
    const std::vector<int> caller_shares = WaterFill(demands, budget);
    for (size_t c = 0; c < callers.size(); ++c) {
      std::vector<int> needs;
      for (int i : callers[c]) needs.push_back(running[i].prefill_remaining);
      const std::vector<int> shares = WaterFill(needs, caller_shares[c]);
      for (size_t k = 0; k < callers[c].size(); ++k) rows[callers[c][k]] = shares[k];
      budget -= caller_shares[c];
    }
  }
  for (int i : prefilling) {
    if (rows[i] > 0) plan.push_back({i, rows[i]});
  }
  return plan;
}

}  // namespace modrwkv

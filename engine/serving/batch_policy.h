// The continuous-batching policy as a pure function: which sequences run in the next step and
// how many rows each. No model, no clock, no threads: tested on its own.
#pragma once

#include <cstdint>
#include <vector>

namespace modrwkv {

struct BatchPolicyOptions {
  int max_step_tokens = 512;  // decode tokens + prefill rows per step
  // Prefill rows a step gets even when decodes use the whole budget, so a long prompt keeps
  // moving under full decode load (and a full batch never starves the queue's head).
  int min_prefill_rows = 32;
};

// A running sequence as the policy sees it, in admission order.
struct SequenceLoad {
  int prefill_remaining = 0;  // prompt rows not yet run; 0 = decoding (one token per step)
  int priority = 0;           // the request's priority: higher prompts take the budget first
  int caller = 0;             // who sent it (any id; equal ids = one caller): callers share fairly
};

struct StepSlice {
  int sequence = 0;  // index into the input vector
  int rows = 0;      // 1 for a decode
};

// Every decoding sequence gets its one token: streams never stall behind a prompt. What is left
// of the budget (at least min_prefill_rows) goes to the prefilling sequences:
// - by priority: the prompts of the highest priority take what they can use before any prompt
//   of a lower priority gets a row;
// - within a priority, max-min fairly among callers (each caller's demand being the rows its
//   prompts have left): one caller's many prompts get no more than another caller's one, unless
//   that one needs less;
// - within a caller, max-min fairly among its prompts: a prompt shorter than an equal share runs
//   whole, the rest split what remains equally (leftover rows to the longer prompts).
// A short request's first token never waits for a long prompt of its own priority.
std::vector<StepSlice> PlanStep(const std::vector<SequenceLoad>& running,
                                const BatchPolicyOptions& options);

// Max-min fair shares ("water filling") of `budget` among `demands`: visited from the least demand
// to the most (in the given order among equals), each takes what it needs or an equal share of
// what is left (at least 1 while anything is), whichever is less. The shares sum to
// min(budget, the sum of the demands).
std::vector<int> WaterFill(const std::vector<int>& demands, int budget);

}  // namespace modrwkv

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
};

struct StepSlice {
  int sequence = 0;  // index into the input vector
  int rows = 0;      // 1 for a decode
};

// Every decoding sequence gets its one token: streams never stall behind a prompt. What is left
// of the budget (at least min_prefill_rows) is shared among prefilling sequences max-min fairly:
// a prompt shorter than an equal share runs whole, the rest split what remains equally (leftover
// rows to the longer prompts). A short request's first token never waits for a long prompt.
std::vector<StepSlice> PlanStep(const std::vector<SequenceLoad>& running,
                                const BatchPolicyOptions& options);

}  // namespace modrwkv

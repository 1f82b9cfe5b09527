// One request as the scheduler thread holds it while it waits and runs: the caller's request, its
// sink, sampler and output protocol, its slot or session, and where its prompt stands.
// Internal to engine/serving; owned and used by the scheduler thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "engine/model/model.h"
#include "engine/sampling/sampler.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/state_pool.h"
#include "engine/text/token_output.h"

namespace modrwkv::serving_internal {

struct Request {
  RequestId id = 0;
  EngineRequest req;
  std::shared_ptr<StreamSink> sink;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<TokenOutput> output;
  PooledSession* session = nullptr;  // its turn is undone if the prompt does not get in whole
  int slot = -1;
  // Prompt cursor: part index and row offset inside it.
  size_t part = 0;
  int64_t offset = 0;
  int prompt_rows = 0, prompt_done = 0;
  int queued_rows = 0;  // what Submit counted against max_queued_prompt_tokens
  int generated = 0;
  int32_t last_token = -1;
  int32_t decode_input[1] = {0};
  std::vector<float> hidden_state;  // RequestOutput::kHiddenState, set when the prompt is done
  bool cancelled = false;
  absl::Time submitted, started = absl::InfinitePast(), first_token = absl::InfinitePast(),
                        last_token_time;
};

// Where a request's prompt stands (to rewind a step that did not run).
struct PromptCursor {
  size_t part = 0;
  int64_t offset = 0;
  int prompt_done = 0;
};

inline int PartRows(const InputRows& p, int n_embd) {
  return static_cast<int>(p.tokens.size() + p.embeddings.size() / n_embd);
}

// Appends the next `rows` prompt rows of `r` to `e` as views and advances the cursor.
void TakePromptRows(Request& r, int rows, int n_embd, StepEntry* e);

}  // namespace modrwkv::serving_internal

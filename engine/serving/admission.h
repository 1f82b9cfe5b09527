// Admission control as pure functions: what makes a request acceptable (fields in range, a prompt)
// and whether the queue bounds admit it now. The scheduler calls them from Submit, on the caller's
// thread, under its queue mutex; they hold no state of their own.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "engine/model/model_config.h"
#include "engine/serving/scheduler.h"

namespace modrwkv {

// INVALID_ARGUMENT naming the field for a request no model step could run.
absl::Status ValidateEngineRequest(const EngineRequest& req, const ModelConfig& config);

// What is queued at the moment of a Submit.
struct QueueLoad {
  int queued_requests = 0;
  int64_t queued_prompt_tokens = 0;
  bool draining = false;
};

// OK, or the refusal with its reason (UNAVAILABLE DRAINING, RESOURCE_EXHAUSTED QUEUE_FULL or
// QUEUED_TOKENS_FULL); `*refused` gets the metric label ("draining", "queue_full",
// "queued_tokens").
absl::Status CheckQueueBounds(const QueueLoad& load, int64_t prompt_rows,
                              const SchedulerOptions& options, std::string_view* refused);

}  // namespace modrwkv

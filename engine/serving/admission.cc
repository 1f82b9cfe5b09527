#include "engine/serving/admission.h"

#include "absl/strings/str_format.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"
#include "engine/serving/request.h"

namespace modrwkv {

using serving_internal::PartRows;

absl::Status ValidateEngineRequest(const EngineRequest& req, const ModelConfig& c) {
  MODRWKV_RETURN_IF_ERROR(req.sampling.Validate(c.vocab_size));
  MODRWKV_RETURN_IF_ERROR(req.stop.Validate(c.vocab_size));
  int64_t rows = 0;
  for (size_t i = 0; i < req.prompt.size(); ++i) {
    const InputRows& p = req.prompt[i];
    if (!p.tokens.empty() && !p.embeddings.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt part %d has both tokens and embeddings", i));
    }
    for (int32_t t : p.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "prompt part %d: token id %d out of range [0, %d)", i, t, c.vocab_size));
      }
    }
    if (p.embeddings.size() % c.n_embd != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt part %d: %d embedding values is not a multiple of n_embd %d", i,
                          p.embeddings.size(), c.n_embd));
    }
    rows += PartRows(p, c.n_embd);
  }
  if (rows == 0) return absl::InvalidArgumentError("prompt is empty");
  if (req.initial_state) {
    if (req.session) {
      return InvalidFieldError(
          "initial_state",
          "initial_state: a request on a session continues the session's own state");
    }
    if (static_cast<int64_t>(req.initial_state->state.size()) != c.StateFloats()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "initial_state %s has %d floats, the model's state %d", req.initial_state->name,
          req.initial_state->state.size(), c.StateFloats()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckQueueBounds(const QueueLoad& load, int64_t prompt_rows,
                              const SchedulerOptions& options, std::string_view* refused) {
  if (load.draining) {
    *refused = "draining";
    return WithReason(absl::UnavailableError("server is draining; retry on another replica"),
                      reason::kDraining);
  }
  if (load.queued_requests >= options.max_queued_requests) {
    *refused = "queue_full";
    return WithReason(
        absl::ResourceExhaustedError(absl::StrFormat(
            "request queue is full (%d waiting); retry later", options.max_queued_requests)),
        reason::kQueueFull);
  }
  if (load.queued_prompt_tokens + prompt_rows > options.max_queued_prompt_tokens) {
    *refused = "queued_tokens";
    return WithReason(
        absl::ResourceExhaustedError(absl::StrFormat(
            "too many prompt tokens queued (%d + %d > %d); retry later", load.queued_prompt_tokens,
            prompt_rows, options.max_queued_prompt_tokens)),
        reason::kQueuedTokensFull);
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

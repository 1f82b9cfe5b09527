// The engine side of one HTTP request: its n choices as engine requests, their events in one
// queue that the HTTP handler thread reads (blocking). The gRPC reactors are callback-driven; an
// HTTP handler owns its thread for the request, so it simply waits.
//
// Media parts go to the encoder pool once; their rows fill every choice's request, then all are
// submitted. Everything the scheduler and the pool call back into is shared state that outlives
// this object, so a handler may give up (client gone, server stopping) at any time.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/serving/scheduler.h"
#include "server/convert.h"
#include "server/media_requests.h"

namespace modrwkv::server {
struct ServingContext;
}

namespace modrwkv::server::http {

struct ChoiceEvent {
  int choice = 0;
  std::optional<TokenEvent> tokens;   // set, or
  std::optional<FinishEvent> finish;  // the choice's last event
};

class EngineCalls {
 public:
  // Starts `requests` (one per choice; they share `media`, whose rows fill each). Errors before
  // anything ran (a full queue, a bad image found when queueing) are returned; later ones arrive
  // as a choice's FinishEvent (kError).
  // `cache_prefix_parts` > 0: the prompt's first parts are a prefix to share through the prefix
  // cache (ServingContext::prefix_cache), see LaunchShared in the .cc.
  static absl::StatusOr<std::unique_ptr<EngineCalls>> Start(ServingContext* ctx,
                                                            std::vector<EngineRequest> requests,
                                                            std::vector<PendingMedia> media,
                                                            size_t cache_prefix_parts = 0);
  ~EngineCalls();  // cancels whatever is still running

  // The next event, waiting at most `timeout`; nullopt on timeout or once every choice finished.
  std::optional<ChoiceEvent> Next(absl::Duration timeout);
  bool done() const;  // every choice has delivered its FinishEvent through Next
  // Cancels the encoder job and every engine request still running (their FinishEvents follow).
  void Cancel();
  // Time spent waiting for the encoder pool (added to the finish events' times).
  absl::Duration encode_wait() const;
  MediaRows media_rows() const;
  // Prompt tokens found in the prefix cache instead of prefilled (0 on a miss).
  int cached_tokens() const;

  struct State;  // shared with the scheduler's sinks and the encoder's callback

 private:
  explicit EngineCalls(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace modrwkv::server::http

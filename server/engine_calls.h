// The engine side of one Generate-shaped request, for both faces (gRPC Generate, HTTP
// completions): its n choices as engine requests, media encoded once for all of them, the prompt
// prefilled once and forked into each choice's slot, and the prefix-state cache.
//
// Events go to one callback. It runs on the scheduler's or the encoder pool's threads (never
// inside Start, never under this object's lock), in order per choice, and exactly one FinishEvent
// per choice arrives, whatever happens: errors before a choice ran, Cancel, the server stopping.
// Everything the scheduler and the pool call back into is shared state that outlives this
// object, so the callback must stay valid until the last finish (the gRPC reactor's goes through
// its ReactorSink; the HTTP handler's through a queue it shares).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/serving/scheduler.h"
#include "server/convert.h"
#include "server/media_requests.h"

namespace modrwkv::server {

struct ServingContext;

struct ChoiceEvent {
  int choice = 0;
  std::optional<TokenEvent> tokens;   // set, or
  std::optional<FinishEvent> finish;  // the choice's last event: its times include the media
                                      // encoding and the shared prefill, its prompt_tokens the
                                      // whole prompt (the shared prefix included)
  // With `finish`: the prompt rows that came from media, and from the prefix cache.
  MediaRows media_rows;
  int cached_tokens = 0;

  static ChoiceEvent Tokens(int choice, TokenEvent tokens) {
    ChoiceEvent e;
    e.choice = choice;
    e.tokens = std::move(tokens);
    return e;
  }
  static ChoiceEvent Finish(int choice, FinishEvent finish) {
    ChoiceEvent e;
    e.choice = choice;
    e.finish = std::move(finish);
    return e;
  }
};
using ChoiceEventFn = std::function<void(ChoiceEvent)>;

class EngineCalls {
 public:
  // Starts `plan.n` choices of `request` (choice i > 0 samples with seed + i when the request has
  // a seed, else with its own). `media` fills the prompt of each once encoded. Errors before
  // anything ran (a full queue, a bad image found when queueing) are returned and `on_event`
  // never runs; later ones arrive as a choice's FinishEvent (kError) — all of them when the
  // request's session first comes back from the shared tier (ServingContext::LocalizeSession).
  //
  // Several choices share one prefill of all the prompt but its last token; `plan.prefix_parts`
  // (text or token parts, at least --prefix-cache-min-tokens long, the cache on) are looked up
  // in and kept in the prefix cache. Every choice is bit for bit what it would be alone.
  static absl::StatusOr<std::unique_ptr<EngineCalls>> Start(ServingContext* ctx,
                                                            EngineRequest request,
                                                            const ChoicePlan& plan,
                                                            std::vector<PendingMedia> media,
                                                            ChoiceEventFn on_event);
  ~EngineCalls();  // cancels whatever is still running

  // Cancels the encoder job and every engine request still running (their FinishEvents follow,
  // kCancelled). Never calls the callback itself.
  void Cancel();

  struct State;  // shared with the scheduler's sinks and the encoder's callback

 private:
  explicit EngineCalls(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace modrwkv::server

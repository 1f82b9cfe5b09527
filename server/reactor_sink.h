// The StreamSink a reactor hands to Scheduler::Submit. The scheduler holds it (shared_ptr) until
// OnFinish, which may be after the RPC is gone: the reactor detaches in OnDone, and events that
// arrive later are dropped. Events are forwarded under the sink's mutex, so a reactor is never
// deleted while the scheduler thread is inside it. Lock order: sink, then the reactor's own.
#pragma once

#include <mutex>
#include <utility>

#include "engine/serving/scheduler.h"

namespace modrwkv::server {

template <typename Target>
class ReactorSink final : public StreamSink {
 public:
  explicit ReactorSink(Target* target) : target_(target) {}

  // Scheduler thread. Target::OnEngine* must not block (they queue and maybe start a write).
  void OnTokens(TokenEvent event) override {
    std::lock_guard<std::mutex> l(mu_);
    if (target_) target_->OnEngineTokens(std::move(event));
  }
  void OnFinish(FinishEvent event) override {
    std::lock_guard<std::mutex> l(mu_);
    if (target_) target_->OnEngineFinish(std::move(event));
  }

  // Runs `f(target)` under the sink's mutex, like an engine event, so the reactor is not deleted
  // while `f` runs; false (and `f` not run) once detached. For callbacks of session commands.
  template <typename F>
  bool Run(F&& f) {
    std::lock_guard<std::mutex> l(mu_);
    if (!target_) return false;
    f(target_);
    return true;
  }

  // Called by the reactor in OnDone; after it returns no event reaches the reactor.
  void Detach() {
    std::lock_guard<std::mutex> l(mu_);
    target_ = nullptr;
  }

 private:
  std::mutex mu_;
  Target* target_;
};

}  // namespace modrwkv::server

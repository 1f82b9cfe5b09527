// How callbacks on other threads reach a reactor that may be gone. The scheduler (or the encoder
// pool, or EngineCalls) holds the handle (shared_ptr) until its last event, which may be after
// the RPC is gone: the reactor detaches in OnDone, and events that arrive later are dropped.
// Events are forwarded under the handle's mutex, so a reactor is never deleted while another
// thread is inside it. Lock order: handle, then the reactor's own.
#pragma once

#include <mutex>
#include <utility>

#include "engine/serving/scheduler.h"

namespace modrwkv::server {

// A reactor as seen from other threads' callbacks: Run reaches it until it detaches.
template <typename Target>
class ReactorHandle {
 public:
  explicit ReactorHandle(Target* target) : target_(target) {}

  // Runs `f(target)` under the handle's mutex, so the reactor is not deleted while `f` runs;
  // false (and `f` not run) once detached. `f` must not block.
  template <typename F>
  bool Run(F&& f) {
    std::lock_guard<std::mutex> l(mu_);
    if (!target_) return false;
    f(target_);
    return true;
  }

  // Called by the reactor in OnDone; after it returns nothing reaches the reactor.
  void Detach() {
    std::lock_guard<std::mutex> l(mu_);
    target_ = nullptr;
  }

 private:
  std::mutex mu_;
  Target* target_;
};

// The StreamSink for one engine request: its events go to Target::OnEngineTokens/OnEngineFinish
// through the handle (scheduler thread; they must not block).
template <typename Target>
class ReactorSink final : public StreamSink, public ReactorHandle<Target> {
 public:
  explicit ReactorSink(Target* target) : ReactorHandle<Target>(target) {}

  void OnTokens(TokenEvent event) override {
    this->Run([&](Target* t) { t->OnEngineTokens(std::move(event)); });
  }
  void OnFinish(FinishEvent event) override {
    this->Run([&](Target* t) { t->OnEngineFinish(std::move(event)); });
  }
};

}  // namespace modrwkv::server

// Runs an asynchronous scheduler command (a session command with a `done` callback) and waits
// for its result: tests only.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <utility>

namespace modrwkv {

// `start` receives the callback to hand to the command; returns what the callback got.
template <typename T, typename F>
T Await(F start) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<T> out;
  start([&](T v) {
    std::lock_guard<std::mutex> l(mu);
    out = std::move(v);
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return out.has_value(); });
  return std::move(*out);
}

}  // namespace modrwkv

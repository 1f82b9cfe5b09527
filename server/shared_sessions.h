// The shared session tier: session state blobs in Redis, so a conversation started on one
// replica continues on another (docs/operations.md, "Sessions across replicas").
//
// Move semantics: a session lives in exactly one place, one replica's state pool or Redis. A
// replica stores a session there when it hands it off (drain); a replica that is asked for a
// session it does not have takes it with GETDEL (atomic: two replicas can never both resume it)
// and imports it under the same id. Keys bind the owner: "modrwkv:session:<id>:<owner digest>",
// so another caller's lookup misses exactly like an unknown id. Entries expire after the TTL.
//
// Redis runs on the tier's own thread (hiredis is blocking); callbacks run there. When Redis is
// unreachable or refuses, operations fail with UNAVAILABLE, the failure is counted
// (modrwkv_shared_sessions_total{event="error"}) and logged, and the server keeps serving its
// local sessions: readiness does not depend on the tier. Each operation reconnects if needed.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/base/session_id.h"

struct redisContext;

namespace modrwkv::server {

class Logger;
class Metrics;

class SharedSessionTier {
 public:
  struct Options {
    std::string address;  // "redis://host:port" or "host:port"
    absl::Duration ttl = absl::Hours(1);
    absl::Duration timeout = absl::Seconds(2);  // connect and per-command
  };
  // INVALID_ARGUMENT for a malformed address; Redis itself is reached lazily (an outage at
  // start-up is an outage like any other).
  static absl::StatusOr<std::unique_ptr<SharedSessionTier>> Start(const Options& options,
                                                                  Metrics* metrics, Logger* log);
  ~SharedSessionTier();  // finishes the queued operations, then stops

  // Stores `blob` for (id, owner) with the TTL, replacing what was there. `done` may be empty.
  void Put(SessionId id, const std::string& owner, std::string blob,
           std::function<void(absl::Status)> done);
  // Takes the blob for (id, owner) out of Redis: nullopt when there is none.
  void Take(SessionId id, const std::string& owner,
            std::function<void(absl::StatusOr<std::optional<std::string>>)> done);

  static std::string Key(SessionId id, const std::string& owner);

 private:
  SharedSessionTier(Options options, std::string host, int port, Metrics* metrics, Logger* log);
  void Loop();
  void Post(std::function<void()> op);
  // A connected context, or UNAVAILABLE (counted and logged).
  absl::StatusOr<redisContext*> Connection();
  // Drops a broken connection after a failed command; returns the error as UNAVAILABLE.
  absl::Status Failed(const std::string& what);

  const Options options_;
  const std::string host_;
  const int port_;
  Metrics* const metrics_;
  Logger* const log_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  redisContext* context_ = nullptr;  // tier thread only
  bool down_ = false;                // tier thread only: the last connection attempt failed
  std::thread thread_;
};

}  // namespace modrwkv::server

// The shared session tier: session state blobs in Redis, so a conversation started on one
// replica continues on another (docs/operations.md, "Sessions across replicas").
//
// An entry is a hash {b: state blob, g: generation} under "modrwkv:session:<id>:<owner digest>":
// keys bind the owner, so another caller's lookup misses exactly like an unknown id. Entries
// expire after the TTL. Every operation is atomic: one command, a transaction or a Lua script.
//
// Move semantics (the default): a session lives in exactly one place, one replica's state pool or
// Redis. A replica stores a session there when it hands it off (drain, a full cold tier); a
// replica asked for a session it does not have takes it (read and delete in one transaction:
// two replicas can never both resume it) and imports it under the same id.
//
// Write-through (Options::write_through; every replica sharing the Redis must agree): the entry
// is the session's latest committed state, so a replica that crashes loses nothing. The owner
// stores the session after every change (Put, conditional); a replica resuming it claims it
// (Take: reads the blob and bumps the generation, the entry stays); before using a local copy a
// replica compares its generation with the entry's (Check) — another one means another replica
// resumed the session since, so the local copy is stale. The generation this replica last wrote
// or claimed is remembered per key (for a TTL; an entry older than that was either refreshed by
// someone else or has expired). A Put whose generation no longer matches is refused (ABORTED):
// another replica took the session meanwhile.
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
#include <string_view>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/base/session_id.h"
#include "server/metrics.h"

struct redisContext;
struct redisReply;

namespace modrwkv::server {

class Logger;

class SharedSessionTier {
 public:
  struct Options {
    std::string address;  // "redis://host:port" or "host:port"
    absl::Duration ttl = absl::Hours(1);
    absl::Duration timeout = absl::Seconds(2);  // connect and per-command
    bool write_through = false;
    // Redis AUTH on each connection when `password` is set (`username` for an ACL user).
    std::string username, password;
  };
  // The credentials in a password file: one line, "PASSWORD" or "USERNAME PASSWORD".
  // INVALID_ARGUMENT (naming the file, never its contents) when it is empty or has more.
  static absl::Status ReadPasswordFile(const std::string& path, Options* options);
  // `metrics` and `log` may be null. INVALID_ARGUMENT for a malformed address; Redis itself is
  // reached lazily (an outage at start-up is an outage like any other).
  static absl::StatusOr<std::unique_ptr<SharedSessionTier>> Start(const Options& options,
                                                                  Metrics* metrics, Logger* log);
  ~SharedSessionTier();  // finishes the queued operations, then stops

  // Stores `blob` for (id, owner) with the TTL. Move semantics: replaces what was there.
  // Write-through: only over the generation this replica last wrote or claimed (or no entry),
  // else ABORTED. `done` may be empty.
  void Put(SessionId id, const std::string& owner, std::string blob,
           std::function<void(absl::Status)> done);
  // A session leaving this replica (a drain, a full cold tier): Put, except that with
  // write-through a session whose latest state this replica has stored is not stored again.
  void HandOff(SessionId id, const std::string& owner, std::string blob,
               std::function<void(absl::Status)> done);
  // The blob for (id, owner), nullopt when there is none. Move semantics: taken out of Redis.
  // Write-through: claimed (the entry stays, its generation now this replica's).
  void Take(SessionId id, const std::string& owner,
            std::function<void(absl::StatusOr<std::optional<std::string>>)> done);
  // Write-through: whether this replica's copy of (id, owner) is still the latest — false when
  // the entry's generation is not the one this replica last wrote or claimed (no entry: true).
  void Check(SessionId id, const std::string& owner,
             std::function<void(absl::StatusOr<bool>)> done);
  // Deletes the entry's blob (a session deleted by its caller, with write-through): its
  // generation stays, bumped, for the TTL, so that another replica's copy is found stale.
  // `done` may be empty.
  void Remove(SessionId id, const std::string& owner, std::function<void(absl::Status)> done);

  bool write_through() const { return options_.write_through; }

  static std::string Key(SessionId id, const std::string& owner);

 private:
  SharedSessionTier(Options options, std::string host, int port, Metrics* metrics, Logger* log);
  void Loop();
  void Post(std::function<void()> op);
  // A connected context, or UNAVAILABLE (counted and logged).
  absl::StatusOr<redisContext*> Connection();
  // Drops a broken connection after a failed command; returns the error as UNAVAILABLE.
  absl::Status Failed(const std::string& what);
  struct ReplyDeleter {
    void operator()(redisReply* r) const;
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
  // Sends `commands` (their arguments binary-safe) in one write on the tier thread's connection,
  // connecting if needed, and reads their replies: in order, or UNAVAILABLE (counted, logged) for
  // no connection or any error reply.
  // kYes: commands that may run twice (reads, WATCH, a whole idempotent transaction) are sent
  // once more on a new connection when Redis had closed the one they went out on.
  enum class Resend { kNo, kYes };
  absl::StatusOr<std::vector<Reply>> Pipeline(
      std::initializer_list<std::initializer_list<std::string_view>> commands,
      Resend resend = Resend::kNo);
  absl::StatusOr<Reply> Command(std::initializer_list<std::string_view> args,
                                Resend resend = Resend::kNo);
  // An entry's generation field: nullopt when nil, UNAVAILABLE (counted) when not a number.
  absl::StatusOr<std::optional<long long>> Generation(const redisReply& r);
  struct KnownGeneration;
  // What this replica last wrote or claimed for `key` (null when nothing, or older than the TTL:
  // such entries are forgotten here).
  const KnownGeneration* Known(const std::string& key);
  // Whether `generation` is the one this replica last wrote or claimed for `key`.
  bool KnownIs(const std::string& key, long long generation);
  void Remember(const std::string& key, long long generation);
  // A write-through store of `key` that did not reach Redis: its entry is older than the local
  // state, so a hand-off must store it. Returns `failure`.
  absl::Status MarkDirty(const std::string& key, absl::Status failure);
  // Put on the tier thread.
  void Store(SessionId id, const std::string& key, const std::string& blob,
             const std::function<void(absl::Status)>& done);
  std::string TtlSeconds() const;
  void Count(Metrics::SharedSessionEvent event) const;  // when there are metrics

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
  struct KnownGeneration {
    long long value;
    absl::Time at;  // when this replica wrote or claimed it
    bool dirty;     // a later store failed: the local state is newer than the entry
  };
  // Write-through, tier thread only: per key, the generation this replica last wrote or claimed.
  absl::flat_hash_map<std::string, KnownGeneration> known_;
  absl::Time next_sweep_ = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace modrwkv::server

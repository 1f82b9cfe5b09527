// The state pool: the model's fixed state slots (allocated once by the backend), a free list, and
// the sessions whose states live in them (hot) or in host memory (cold, LRU-bounded, idle TTL).
// Owned and used by the scheduler thread only, except Knows().
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model.h"
#include "engine/session_id.h"

namespace modrwkv {

class SchedulerObserver;

// A session's state is in a model slot (hot, slot >= 0) or in host memory (cold). A cold
// session with an empty `cold` vector holds the zero state.
struct Session {
  SessionId id;
  std::string owner;
  int slot = -1;
  std::vector<float> cold;
  int64_t tokens = 0;
  // The last generated token, sampled but not yet run through the model (-1: none); the next
  // request on the session feeds it first, so a session continues exactly where it stopped.
  int32_t pending_token = -1;
  absl::Time last_used;
  bool busy = false;  // a request is running on it
};

class StatePool {
 public:
  StatePool(Model* model, int max_cold_sessions, absl::Duration session_ttl,
            SchedulerObserver* observer);

  // ---- slots ----
  // A free slot; if none, the least recently used idle hot session moves to the cold tier.
  std::optional<int> AcquireSlot();
  void ReleaseSlot(int slot);
  int slots_total() const { return model_->num_slots(); }
  int slots_used() const { return slots_total() - static_cast<int>(free_slots_.size()); }

  // ---- sessions ----
  Session* Create(const std::string& owner);
  // NOT_FOUND for unknown ids and for sessions of another owner (the same answer, so an id
  // cannot be probed).
  absl::StatusOr<Session*> Find(SessionId id, const std::string& owner);
  void Delete(Session* s);
  // Puts the session's state in a slot (UNAVAILABLE when no slot can be freed).
  absl::Status MakeHot(Session* s);
  absl::StatusOr<std::vector<float>> StateOf(const Session& s) const;
  absl::StatusOr<Session*> Fork(const Session& src);
  absl::StatusOr<std::string> Export(Session* s) const;
  absl::StatusOr<Session*> Import(const std::string& blob, const std::string& owner);
  // Deletes idle sessions past their TTL (at most once a second).
  void Sweep(absl::Time now);
  int hot_sessions() const;
  int cold_sessions() const;

  // Thread-safe: whether `id` exists and belongs to `owner` (for admission without a round trip
  // to the scheduler thread).
  bool Knows(SessionId id, const std::string& owner) const;

 private:
  void EnforceColdCapacity();

  Model* const model_;
  const int max_cold_sessions_;
  const absl::Duration ttl_;
  SchedulerObserver* const obs_;
  std::vector<int> free_slots_;
  absl::flat_hash_map<SessionId, std::unique_ptr<Session>> sessions_;
  absl::Time last_sweep_ = absl::InfinitePast();

  mutable std::mutex owners_mu_;
  absl::flat_hash_map<SessionId, std::string> owners_;  // mirror of sessions_ for Knows()
};

}  // namespace modrwkv

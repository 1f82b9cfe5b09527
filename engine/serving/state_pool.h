// The state pool: the model's fixed state slots (allocated once by the backend), a free list, and
// the sessions whose states live in them (hot) or in host memory (cold, LRU-bounded, idle TTL).
// Owned and used by the scheduler thread only, except Knows().
//
// Lifetime rule: a PooledSession* handed out stays valid until Delete() of that session, or until
// the scheduler releases it and a later pool operation evicts it. Eviction (cold-tier overflow,
// TTL) only ever picks sessions that are idle — not busy with a request and not pinned by the pool
// operation in progress — so an operation never deletes the session it works on.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/base/session_id.h"
#include "engine/model/model.h"

namespace modrwkv {

class SchedulerObserver;

// A session's state is in a model slot (hot, slot >= 0) or in host memory (cold: the backend's
// ColdState, possibly still being copied out of the slot it left). A cold session without a
// ColdState holds the zero state.
struct PooledSession {
  SessionId id;
  std::string owner;
  int slot = -1;
  std::unique_ptr<ColdState> cold;
  int64_t tokens = 0;
  // The last generated token, sampled but not yet run through the model (-1: none); the next
  // request on the session feeds it first, so a session continues exactly where it stopped.
  int32_t pending_token = -1;
  absl::Time last_used;
  bool busy = false;  // a request is running on it
  int pins = 0;       // pool operations in progress on it (never evicted while > 0)
  // The turn a request is running on the session: where it started, so that it can be undone
  // exactly (StatePool::BeginTurn).
  struct Turn {
    int slot = -1;                    // the starting state copied into a spare slot, or
    std::unique_ptr<ColdState> host;  // offloaded to host memory (slot < 0)
    int32_t pending_token = -1;
  };
  std::optional<Turn> turn;
  // A turn failed and its start could not be put back (the model's slot copy and write both
  // failed: a device failing): the state is half a turn, so nothing may run on it, read it or
  // spill it (StatePool::Usable); only deleting it is allowed.
  bool lost = false;

  bool idle() const { return !busy && pins == 0; }
};

struct StatePoolOptions {
  // Idle sessions kept out of slots, in host memory. When a new session or an offload overflows
  // the tier, the least recently used idle cold session goes, the acting owner's own first.
  int max_cold_sessions = 1024;
  int max_sessions_per_owner = 0;  // 0 = no per-owner limit
  // A caller's own session quota instead of max_sessions_per_owner (0 = no limit); unset, or
  // nullopt for an owner: max_sessions_per_owner. Called on the pool's thread.
  std::function<std::optional<int>(const std::string& owner)> sessions_quota_of;
  absl::Duration session_ttl = absl::Hours(1);  // idle sessions older than this are deleted
  // Called with the state of an idle session evicted because the cold tier is full, just before
  // it is deleted (the scheduler hands it to the shared tier); unset: it is simply lost.
  std::function<void(SessionId id, const std::string& owner, std::vector<float> state,
                     int64_t tokens, int32_t pending_token)>
      spill;
  // New session ids start with this hint (SessionId::Random); imported ones keep their own id.
  std::optional<uint32_t> session_routing_hint;
};

class StatePool {
 public:
  StatePool(Model* model, const StatePoolOptions& options, SchedulerObserver* observer);

  // ---- slots ----
  // A free slot; if none, the least recently used idle hot session moves to the cold tier (which
  // may evict an idle cold session, `owner`'s first). nullopt when every slot is busy.
  std::optional<int> AcquireSlot(const std::string& owner);
  void ReleaseSlot(int slot);
  int slots_total() const { return model_->num_slots(); }
  int slots_used() const { return slots_total() - static_cast<int>(free_slots_.size()); }

  // ---- turns ----
  // A request's turn on a hot session keeps the state it started from, so that a turn that ends
  // early (an error, a cancel before its prompt is in) is undone exactly. The copy goes to a free
  // slot when there is one — a copy inside the pool, on a GPU a device-to-device copy with no
  // host round trip — else offloaded to host memory. A slot holding a turn's start is lent, not
  // kept: when a slot is needed and none is free, such a copy is offloaded to host memory before
  // any idle session is. slots_used() counts lent slots.
  absl::Status BeginTurn(PooledSession* s);
  // Puts the session back as it was at BeginTurn (state and pending token) and ends the turn. A
  // start in a lent slot whose copy back fails goes through host memory instead; when that
  // fails too, the session is marked lost and the error returned.
  absl::Status RollBack(PooledSession* s);
  // DATA_LOSS (reason SESSION_LOST) for a lost session, naming it; BeginTurn, Fork and Export
  // refuse such a session with it.
  static absl::Status Usable(const PooledSession& s);
  // Keeps the session's new state and ends the turn.
  void EndTurn(PooledSession* s);
  int turns_in_slots() const;

  // ---- sessions ----
  // New sessions start cold with the zero state. RESOURCE_EXHAUSTED (naming the limit) when the
  // owner is at max_sessions_per_owner, or when the cold tier is full of sessions that cannot be
  // evicted and no slot is free to hold the new one.
  absl::StatusOr<PooledSession*> Create(const std::string& owner);
  // NOT_FOUND for unknown ids and for sessions of another owner (the same answer, so an id
  // cannot be probed).
  absl::StatusOr<PooledSession*> Find(SessionId id, const std::string& owner);
  void Delete(PooledSession* s);
  // Puts the session's state in a slot (UNAVAILABLE when no slot can be freed). `s` survives.
  absl::Status MakeHot(PooledSession* s);
  absl::StatusOr<std::vector<float>> StateOf(const PooledSession& s) const;
  absl::StatusOr<PooledSession*> Fork(PooledSession* src);
  // The session's state and blob header, for encoding off the scheduler thread.
  struct Snapshot {
    std::vector<float> state;
    int64_t tokens = 0;
    int32_t pending_token = -1;
  };
  absl::StatusOr<Snapshot> Export(PooledSession* s) const;
  // `state` was decoded and checked against the model (DecodeStateBlob) by the caller. With `id`
  // the session keeps that id (a session moving between servers); ALREADY_EXISTS if it is taken.
  absl::StatusOr<PooledSession*> Import(std::vector<float> state, int64_t tokens,
                                        int32_t pending_token, const std::string& owner,
                                        std::optional<SessionId> id = std::nullopt);
  // Every idle session (no request running on it), with its owner.
  std::vector<std::pair<SessionId, std::string>> IdleSessions() const;
  // Deletes idle sessions past their TTL (at most once a second).
  void Sweep(absl::Time now);
  int hot_sessions() const;
  int cold_sessions() const;
  // One pass over the sessions: hot and cold counts, and the host memory the cold tier holds
  // (cold sessions' states and turns' starting states in host memory, ColdState::bytes(): on a
  // GPU pinned memory in the state pool's element type).
  struct TierStats {
    int hot = 0, cold = 0;
    int64_t host_bytes = 0;
  };
  TierStats Tiers() const;
  int sessions_of(const std::string& owner) const;

  // Thread-safe: whether `id` exists and belongs to `owner` (for admission without a round trip
  // to the scheduler thread).
  bool Knows(SessionId id, const std::string& owner) const;

 private:
  class Pin;
  // A free slot, or one lent to a turn's start (moved to host memory), or one freed by moving
  // the LRU idle hot session to the cold tier (which may then be over its bound: the caller
  // settles it with EnforceColdCapacity).
  std::optional<int> TakeSlot();
  // A free slot holding a copy of slot `src` (a copy inside the pool); nullopt when no slot is
  // free or the copy fails.
  std::optional<int> CopyToFreeSlot(int src);
  // A lent slot back from a turn whose start moves to host memory; nullopt if none is lent.
  std::optional<int> ReclaimTurnSlot();
  // A free slot, else a lent one taken back; nullopt if neither.
  std::optional<int> FreeOrLentSlot();
  // Adds a cold zero-state session after the quota check (a random id unless `id` is given);
  // pinned by the caller's Pin.
  absl::StatusOr<PooledSession*> NewSession(const std::string& owner,
                                            std::optional<SessionId> id = std::nullopt);
  // Brings the idle cold tier back under max_cold_sessions, evicting `owner`'s LRU idle sessions
  // first, then anyone's. If `fresh` is still cold and the tier is still over (nothing idle to
  // evict), `fresh` moves into a free slot or is refused.
  absl::Status EnforceColdCapacity(const std::string& owner, PooledSession* fresh);
  // Create/Import/Fork's common tail: settles the tier with `s` pinned; deletes `s` if refused.
  absl::Status FitNewSession(PooledSession* s);
  void Evict(PooledSession* s, std::string_view why);
  // Puts `s`'s cold state (or the zero state) into `slot`; `s` is hot after it.
  absl::Status MoveIntoSlot(PooledSession* s, int slot);

  Model* const model_;
  const StatePoolOptions opts_;
  SchedulerObserver* const obs_;
  std::vector<int> free_slots_;
  absl::flat_hash_map<SessionId, std::unique_ptr<PooledSession>> sessions_;
  absl::flat_hash_map<std::string, int> per_owner_;
  absl::Time last_sweep_ = absl::InfinitePast();

  mutable std::mutex owners_mu_;
  absl::flat_hash_map<SessionId, std::string> owners_;  // mirror of sessions_ for Knows()
};

}  // namespace modrwkv

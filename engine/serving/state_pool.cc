#include "engine/serving/state_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/errors.h"
#include "engine/base/status_macros.h"
#include "engine/serving/scheduler.h"

namespace modrwkv {

// Keeps a session out of eviction for the length of one pool operation.
class StatePool::Pin {
 public:
  explicit Pin(PooledSession* s) : s_(s) { ++s_->pins; }
  ~Pin() { --s_->pins; }
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;

 private:
  PooledSession* const s_;
};

StatePool::StatePool(Model* model, const StatePoolOptions& options, SchedulerObserver* observer)
    : model_(model), opts_(options), obs_(observer) {
  for (int s = model_->num_slots() - 1; s >= 0; --s) free_slots_.push_back(s);
}

std::optional<int> StatePool::AcquireSlot(const std::string& owner) {
  std::optional<int> slot = TakeSlot();
  // Never fails without a fresh session: at worst the offloaded session itself is evicted.
  if (slot) (void)EnforceColdCapacity(owner, nullptr);
  return slot;
}

std::optional<int> StatePool::FreeOrLentSlot() {
  if (!free_slots_.empty()) {
    const int s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  return ReclaimTurnSlot();
}

std::optional<int> StatePool::TakeSlot() {
  if (std::optional<int> slot = FreeOrLentSlot()) return slot;
  PooledSession* lru = nullptr;
  for (auto& [id, s] : sessions_) {
    if (s->slot >= 0 && s->idle() && (!lru || s->last_used < lru->last_used)) lru = s.get();
  }
  if (!lru) return std::nullopt;
  absl::StatusOr<std::unique_ptr<ColdState>> cold = model_->OffloadSlot(lru->slot);
  if (!cold.ok()) return std::nullopt;
  lru->cold = *std::move(cold);
  const int slot = lru->slot;
  lru->slot = -1;
  obs_->OnSessionOffload(/*to_cold=*/true);
  return slot;
}

void StatePool::ReleaseSlot(int slot) { free_slots_.push_back(slot); }

std::optional<int> StatePool::CopyToFreeSlot(int src) {
  if (free_slots_.empty() || !model_->CopySlot(src, free_slots_.back()).ok()) return std::nullopt;
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

std::optional<int> StatePool::ReclaimTurnSlot() {
  for (auto& [id, s] : sessions_) {
    if (!s->turn || s->turn->slot < 0) continue;
    absl::StatusOr<std::unique_ptr<ColdState>> start = model_->OffloadSlot(s->turn->slot);
    if (!start.ok()) continue;
    s->turn->host = *std::move(start);
    return std::exchange(s->turn->slot, -1);
  }
  return std::nullopt;
}

absl::Status StatePool::Usable(const PooledSession& s) {
  if (!s.lost) return absl::OkStatus();
  return WithReason(absl::DataLossError(absl::StrCat(
                        "session_id ", s.id.ToString(),
                        " lost its state: a request on it failed and could not be undone; "
                        "delete the session")),
                    reason::kSessionLost);
}

absl::Status StatePool::BeginTurn(PooledSession* s) {
  MODRWKV_RETURN_IF_ERROR(Usable(*s));
  if (s->slot < 0) return absl::FailedPreconditionError("BeginTurn: the session is not hot");
  PooledSession::Turn t;
  t.pending_token = s->pending_token;
  if (std::optional<int> copy = CopyToFreeSlot(s->slot)) {
    t.slot = *copy;
  } else {
    MODRWKV_ASSIGN_OR_RETURN(t.host, model_->OffloadSlot(s->slot));
  }
  s->turn = std::move(t);
  return absl::OkStatus();
}

absl::Status StatePool::RollBack(PooledSession* s) {
  if (!s->turn) return absl::OkStatus();
  PooledSession::Turn t = std::move(*s->turn);
  s->turn.reset();
  s->pending_token = t.pending_token;
  absl::Status st;
  if (t.slot >= 0) {
    st = model_->CopySlot(t.slot, s->slot);
    if (!st.ok()) {  // through host memory, as a turn without a spare slot does
      absl::StatusOr<std::unique_ptr<ColdState>> start = model_->OffloadSlot(t.slot);
      st = start.ok() ? model_->RestoreSlot(s->slot, **start) : start.status();
    }
    ReleaseSlot(t.slot);
  } else {
    st = model_->RestoreSlot(s->slot, *t.host);
  }
  if (!st.ok()) s->lost = true;
  return st;
}

void StatePool::EndTurn(PooledSession* s) {
  if (s->turn && s->turn->slot >= 0) ReleaseSlot(s->turn->slot);
  s->turn.reset();
}

int StatePool::turns_in_slots() const {
  int n = 0;
  for (const auto& [id, s] : sessions_) n += s->turn && s->turn->slot >= 0;
  return n;
}

absl::Status StatePool::MoveIntoSlot(PooledSession* s, int slot) {
  if (!s->cold) {
    MODRWKV_RETURN_IF_ERROR(model_->ResetSlot(slot));
  } else {
    MODRWKV_RETURN_IF_ERROR(model_->RestoreSlot(slot, *s->cold));
    obs_->OnSessionOffload(/*to_cold=*/false);
  }
  s->cold.reset();
  s->slot = slot;
  return absl::OkStatus();
}

absl::StatusOr<PooledSession*> StatePool::NewSession(const std::string& owner,
                                                     std::optional<SessionId> id) {
  if (id && sessions_.contains(*id)) {
    return absl::AlreadyExistsError(absl::StrCat("session_id ", id->ToString(), " exists"));
  }
  const std::optional<int> own =
      opts_.sessions_quota_of ? opts_.sessions_quota_of(owner) : std::nullopt;
  const int quota = own.value_or(opts_.max_sessions_per_owner);
  if (quota > 0 && sessions_of(owner) >= quota) {
    return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                          "this caller already holds %d sessions (%s); delete one first", quota,
                          own ? "its own limit" : "max_sessions_per_owner")),
                      reason::kSessionQuota);
  }
  auto s = std::make_unique<PooledSession>();
  s->id = id ? *id : SessionId::Random(opts_.session_routing_hint);
  s->owner = owner;
  s->last_used = absl::Now();
  PooledSession* p = s.get();
  sessions_.emplace(p->id, std::move(s));
  ++per_owner_[owner];
  std::lock_guard<std::mutex> l(owners_mu_);
  owners_[p->id] = owner;
  return p;
}

absl::Status StatePool::FitNewSession(PooledSession* s) {
  absl::Status st;
  {
    Pin pin(s);
    st = EnforceColdCapacity(s->owner, s);
  }  // unpinned before a refused session is deleted
  if (!st.ok()) Delete(s);
  return st;
}

absl::StatusOr<PooledSession*> StatePool::Create(const std::string& owner) {
  MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, NewSession(owner));
  MODRWKV_RETURN_IF_ERROR(FitNewSession(s));
  return s;
}

absl::StatusOr<PooledSession*> StatePool::Find(SessionId id, const std::string& owner) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->owner != owner) {
    return WithReason(absl::NotFoundError(absl::StrCat("session_id ", id.ToString(), " not found")),
                      reason::kSessionNotFound);
  }
  return it->second.get();
}

void StatePool::Delete(PooledSession* s) {
  if (s->slot >= 0) ReleaseSlot(s->slot);
  EndTurn(s);
  {
    std::lock_guard<std::mutex> l(owners_mu_);
    owners_.erase(s->id);
  }
  if (auto it = per_owner_.find(s->owner); it != per_owner_.end() && --it->second == 0) {
    per_owner_.erase(it);
  }
  sessions_.erase(s->id);
}

void StatePool::Evict(PooledSession* s, std::string_view why) {
  obs_->OnSessionEvicted(why);
  if (why == "cold_capacity" && opts_.spill) {
    absl::StatusOr<Snapshot> snap = Export(s);
    if (snap.ok()) {
      opts_.spill(s->id, s->owner, std::move(snap->state), snap->tokens, snap->pending_token);
    }
  }
  Delete(s);
}

bool StatePool::Knows(SessionId id, const std::string& owner) const {
  std::lock_guard<std::mutex> l(owners_mu_);
  auto it = owners_.find(id);
  return it != owners_.end() && it->second == owner;
}

absl::Status StatePool::MakeHot(PooledSession* s) {
  if (s->slot >= 0) return absl::OkStatus();
  std::optional<int> slot = TakeSlot();
  if (!slot) return WithReason(absl::UnavailableError("no free state slot"), reason::kNoFreeSlot);
  if (absl::Status st = MoveIntoSlot(s, *slot); !st.ok()) {
    ReleaseSlot(*slot);
    return st;
  }
  // The offload TakeSlot may have done is settled now that `s` left the cold tier.
  (void)EnforceColdCapacity(s->owner, nullptr);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> StatePool::StateOf(const PooledSession& s) const {
  std::vector<float> v(model_->config().StateFloats(), 0.0f);
  if (s.slot >= 0) {
    MODRWKV_RETURN_IF_ERROR(model_->ReadSlot(s.slot, absl::MakeSpan(v)));
  } else if (s.cold) {
    MODRWKV_RETURN_IF_ERROR(s.cold->Read(absl::MakeSpan(v)));
  }
  return v;
}

absl::StatusOr<PooledSession*> StatePool::Fork(PooledSession* src) {
  MODRWKV_RETURN_IF_ERROR(Usable(*src));
  Pin pin_src(src);
  // A hot session's copy goes to a free slot when there is one (a copy inside the pool), else it
  // is offloaded; a cold one's is read (a ColdState is not shared).
  int slot = -1;
  std::unique_ptr<ColdState> cold;
  if (std::optional<int> copy = src->slot >= 0 ? CopyToFreeSlot(src->slot) : std::nullopt) {
    slot = *copy;
  } else if (src->slot >= 0) {
    MODRWKV_ASSIGN_OR_RETURN(cold, model_->OffloadSlot(src->slot));
  } else if (src->cold) {
    MODRWKV_ASSIGN_OR_RETURN(std::vector<float> state, StateOf(*src));
    cold = std::make_unique<HostColdState>(std::move(state));
  }
  absl::StatusOr<PooledSession*> made = NewSession(src->owner);
  if (!made.ok()) {
    if (slot >= 0) ReleaseSlot(slot);
    return made.status();
  }
  PooledSession* dst = *made;
  dst->slot = slot;
  dst->cold = std::move(cold);
  dst->tokens = src->tokens;
  dst->pending_token = src->pending_token;
  src->last_used = absl::Now();
  MODRWKV_RETURN_IF_ERROR(FitNewSession(dst));
  return dst;
}

absl::StatusOr<StatePool::Snapshot> StatePool::Export(PooledSession* s) const {
  MODRWKV_RETURN_IF_ERROR(Usable(*s));
  Snapshot snap;
  MODRWKV_ASSIGN_OR_RETURN(snap.state, StateOf(*s));
  snap.tokens = s->tokens;
  snap.pending_token = s->pending_token;
  s->last_used = absl::Now();
  return snap;
}

absl::StatusOr<PooledSession*> StatePool::Import(std::vector<float> state, int64_t tokens,
                                                 int32_t pending_token, const std::string& owner,
                                                 std::optional<SessionId> id) {
  if (state.size() != static_cast<size_t>(model_->config().StateFloats())) {
    return absl::InvalidArgumentError("imported state has the wrong size for this model");
  }
  if (pending_token >= model_->config().vocab_size) {
    return absl::InvalidArgumentError("session state blob's pending token is outside the vocab");
  }
  MODRWKV_ASSIGN_OR_RETURN(PooledSession * s, NewSession(owner, id));
  s->cold = std::make_unique<HostColdState>(std::move(state));
  s->tokens = tokens;
  s->pending_token = pending_token;
  MODRWKV_RETURN_IF_ERROR(FitNewSession(s));
  return s;
}

std::vector<std::pair<SessionId, std::string>> StatePool::IdleSessions() const {
  std::vector<std::pair<SessionId, std::string>> out;
  for (const auto& [id, s] : sessions_) {
    if (s->idle()) out.emplace_back(id, s->owner);
  }
  return out;
}

void StatePool::Sweep(absl::Time now) {
  if (now - last_sweep_ < absl::Seconds(1)) return;
  last_sweep_ = now;
  std::vector<PooledSession*> expired;
  for (auto& [id, s] : sessions_) {
    if (s->idle() && now - s->last_used > opts_.session_ttl) expired.push_back(s.get());
  }
  for (PooledSession* s : expired) Evict(s, "ttl");
}

absl::Status StatePool::EnforceColdCapacity(const std::string& owner, PooledSession* fresh) {
  // The tier holds every cold session not running a request; pinned ones count but cannot go.
  // Candidates: idle cold sessions, the acting owner's first, least recently used first.
  std::vector<PooledSession*> victims;
  int pinned = 0;
  for (auto& [id, s] : sessions_) {
    if (s->slot >= 0 || s->busy) continue;
    if (s->idle()) {
      victims.push_back(s.get());
    } else {
      ++pinned;
    }
  }
  int over = static_cast<int>(victims.size()) + pinned - opts_.max_cold_sessions;
  if (over <= 0) return absl::OkStatus();
  std::sort(victims.begin(), victims.end(), [&](const PooledSession* a, const PooledSession* b) {
    const bool ao = a->owner == owner, bo = b->owner == owner;
    if (ao != bo) return ao;
    return a->last_used < b->last_used;
  });
  for (size_t i = 0; i < victims.size() && over > 0; ++i, --over)
    Evict(victims[i], "cold_capacity");
  if (over <= 0 || !fresh || fresh->slot >= 0) return absl::OkStatus();
  // Nothing idle is left to evict: the new session may still live in a free slot, or in one
  // lent to a turn's start (taken back).
  if (std::optional<int> slot = FreeOrLentSlot()) {
    if (MoveIntoSlot(fresh, *slot).ok()) return absl::OkStatus();
    ReleaseSlot(*slot);
  }
  return WithReason(absl::ResourceExhaustedError(absl::StrFormat(
                        "the session tier is full: %d sessions held in host memory "
                        "(max_cold_sessions) are in use and no state slot is free; retry later",
                        opts_.max_cold_sessions)),
                    reason::kSessionTierFull);
}

int StatePool::hot_sessions() const { return Tiers().hot; }

int StatePool::cold_sessions() const { return Tiers().cold; }

StatePool::TierStats StatePool::Tiers() const {
  TierStats t;
  for (const auto& [id, s] : sessions_) {
    ++(s->slot >= 0 ? t.hot : t.cold);
    if (s->cold) t.host_bytes += s->cold->bytes();
    if (s->turn && s->turn->host) t.host_bytes += s->turn->host->bytes();
  }
  return t;
}

int StatePool::sessions_of(const std::string& owner) const {
  auto it = per_owner_.find(owner);
  return it == per_owner_.end() ? 0 : it->second;
}

}  // namespace modrwkv

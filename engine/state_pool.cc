#include "engine/state_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/errors.h"
#include "engine/scheduler.h"
#include "engine/state_blob.h"
#include "engine/status_macros.h"

namespace modrwkv {

StatePool::StatePool(Model* model, int max_cold_sessions, absl::Duration session_ttl,
                     SchedulerObserver* observer)
    : model_(model), max_cold_sessions_(max_cold_sessions), ttl_(session_ttl), obs_(observer) {
  for (int s = model_->num_slots() - 1; s >= 0; --s) free_slots_.push_back(s);
}

std::optional<int> StatePool::AcquireSlot() {
  if (!free_slots_.empty()) {
    const int s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  Session* lru = nullptr;
  for (auto& [id, s] : sessions_) {
    if (s->slot >= 0 && !s->busy && (!lru || s->last_used < lru->last_used)) lru = s.get();
  }
  if (!lru) return std::nullopt;
  std::vector<float> state(model_->config().StateFloats());
  if (!model_->ReadSlot(lru->slot, absl::MakeSpan(state)).ok()) return std::nullopt;
  lru->cold = std::move(state);
  const int slot = lru->slot;
  lru->slot = -1;
  obs_->OnSessionOffload(/*to_cold=*/true);
  EnforceColdCapacity();
  return slot;
}

void StatePool::ReleaseSlot(int slot) { free_slots_.push_back(slot); }

Session* StatePool::Create(const std::string& owner) {
  auto s = std::make_unique<Session>();
  s->id = SessionId::Random();
  s->owner = owner;
  s->last_used = absl::Now();
  Session* p = s.get();
  sessions_.emplace(p->id, std::move(s));
  {
    std::lock_guard<std::mutex> l(owners_mu_);
    owners_[p->id] = owner;
  }
  EnforceColdCapacity();
  return p;
}

absl::StatusOr<Session*> StatePool::Find(SessionId id, const std::string& owner) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->owner != owner) {
    return WithReason(absl::NotFoundError(absl::StrCat("session_id ", id.ToString(), " not found")),
                      reason::kSessionNotFound);
  }
  return it->second.get();
}

void StatePool::Delete(Session* s) {
  if (s->slot >= 0) ReleaseSlot(s->slot);
  {
    std::lock_guard<std::mutex> l(owners_mu_);
    owners_.erase(s->id);
  }
  sessions_.erase(s->id);
}

bool StatePool::Knows(SessionId id, const std::string& owner) const {
  std::lock_guard<std::mutex> l(owners_mu_);
  auto it = owners_.find(id);
  return it != owners_.end() && it->second == owner;
}

absl::Status StatePool::MakeHot(Session* s) {
  if (s->slot >= 0) return absl::OkStatus();
  std::optional<int> slot = AcquireSlot();
  if (!slot) return WithReason(absl::UnavailableError("no free state slot"), reason::kNoFreeSlot);
  absl::Status st;
  if (!s->cold.empty()) {
    st = model_->WriteSlot(*slot, s->cold);
    if (st.ok()) obs_->OnSessionOffload(/*to_cold=*/false);
  } else {
    st = model_->ResetSlot(*slot);
  }
  if (!st.ok()) {
    ReleaseSlot(*slot);
    return st;
  }
  std::vector<float>().swap(s->cold);
  s->slot = *slot;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> StatePool::StateOf(const Session& s) const {
  std::vector<float> v(model_->config().StateFloats(), 0.0f);
  if (s.slot >= 0) {
    MODRWKV_RETURN_IF_ERROR(model_->ReadSlot(s.slot, absl::MakeSpan(v)));
  } else if (!s.cold.empty()) {
    v = s.cold;
  }
  return v;
}

absl::StatusOr<Session*> StatePool::Fork(const Session& src) {
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> state, StateOf(src));
  Session* dst = Create(src.owner);
  dst->cold = std::move(state);
  dst->tokens = src.tokens;
  dst->pending_token = src.pending_token;
  return dst;
}

absl::StatusOr<std::string> StatePool::Export(Session* s) const {
  MODRWKV_ASSIGN_OR_RETURN(std::vector<float> state, StateOf(*s));
  const ModelConfig& c = model_->config();
  StateBlobHeader h;
  h.model_fingerprint = model_->info().fingerprint;
  h.n_layer = c.n_layer;
  h.n_embd = c.n_embd;
  h.head_size = c.head_size;
  h.tokens = s->tokens;
  h.pending_token = s->pending_token;
  s->last_used = absl::Now();
  return EncodeStateBlob(h, state);
}

absl::StatusOr<Session*> StatePool::Import(const std::string& blob, const std::string& owner) {
  std::vector<float> state;
  MODRWKV_ASSIGN_OR_RETURN(StateBlobHeader h, DecodeStateBlob(blob, model_->config(),
                                                              model_->info().fingerprint, &state));
  if (h.pending_token >= model_->config().vocab_size) {
    return absl::InvalidArgumentError("session state blob's pending token is outside the vocab");
  }
  Session* s = Create(owner);
  s->cold = std::move(state);
  s->tokens = h.tokens;
  s->pending_token = h.pending_token;
  return s;
}

void StatePool::Sweep(absl::Time now) {
  if (now - last_sweep_ < absl::Seconds(1)) return;
  last_sweep_ = now;
  std::vector<Session*> expired;
  for (auto& [id, s] : sessions_) {
    if (!s->busy && now - s->last_used > ttl_) expired.push_back(s.get());
  }
  for (Session* s : expired) Delete(s);
}

// Keeps at most max_cold_sessions idle sessions out of slots; the least recently used go.
void StatePool::EnforceColdCapacity() {
  std::vector<Session*> cold;
  for (auto& [id, s] : sessions_)
    if (s->slot < 0 && !s->busy) cold.push_back(s.get());
  if (static_cast<int>(cold.size()) <= max_cold_sessions_) return;
  std::sort(cold.begin(), cold.end(),
            [](const Session* a, const Session* b) { return a->last_used < b->last_used; });
  const size_t drop = cold.size() - max_cold_sessions_;
  for (size_t i = 0; i < drop; ++i) Delete(cold[i]);
}

int StatePool::hot_sessions() const {
  int n = 0;
  for (auto& [id, s] : sessions_) n += s->slot >= 0;
  return n;
}

int StatePool::cold_sessions() const { return static_cast<int>(sessions_.size()) - hot_sessions(); }

}  // namespace modrwkv

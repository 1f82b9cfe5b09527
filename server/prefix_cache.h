// The prefix-state cache: the RNN state after a common prompt prefix (a system prompt, a few-shot
// block), kept as a session of the state pool and keyed by a digest of the caller and the exact
// prefix rows. A request that starts with a cached prefix forks that session and prefills only the
// rest; the engine is chunking-invariant, so the answer is bit for bit a cold run's.
//
// Entries live where the pool keeps idle sessions (spare state slots, then the host-memory cold
// tier), so the pool's own LRU and TTL may drop one first: a fork of a dropped entry is NOT_FOUND
// and the caller prefills cold (and re-inserts). This class maps keys to sessions, LRU, bounded by
// entries, and lets concurrent misses of one key wait for one prefill (BeginMiss). Thread-safe.
#pragma once

#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/base/session_id.h"
#include "engine/serving/scheduler.h"

namespace modrwkv::server {

class PrefixCache {
 public:
  explicit PrefixCache(int max_entries) : max_entries_(max_entries) {}

  // SHA-256 of the owner, the name of the initial state the prefix starts from ("" = the zero
  // state; names are fixed for the process's life) and the rows (token ids, embedding rows) of
  // `prefix`.
  static std::string Key(const std::string& owner, const std::string& initial_state,
                         const std::vector<InputRows>& prefix);

  // The session holding the prefix's state, most recently used now.
  std::optional<SessionId> Find(const std::string& key);

  struct Evicted {
    SessionId session;
    std::string owner;
  };
  // Maps `key` to `session` (of `owner`). Returns the sessions no entry refers to any more (the
  // least recently used beyond max_entries, or the key's previous session): delete them.
  std::vector<Evicted> Insert(const std::string& key, SessionId session, const std::string& owner);
  // Drops `key` if it still maps to `session` (the pool dropped it).
  void Erase(const std::string& key, SessionId session);

  int size() const;
  std::vector<SessionId> Sessions() const;  // the sessions the entries hold

  // Concurrent misses of one key share one prefill. The first BeginMiss of a key returns true:
  // the caller prefills and reports with EndMiss. Later ones, until then, return false and are
  // queued: EndMiss hands each the leader's outcome, the cached session or nullopt (the prefill
  // failed or the cache kept nothing; the waiter then prefills itself).
  using MissWaiter = std::function<void(std::optional<SessionId> cached)>;
  bool BeginMiss(const std::string& key, MissWaiter waiter);
  void EndMiss(const std::string& key, std::optional<SessionId> cached);  // runs the waiters

 private:
  struct Entry {
    std::string key;
    SessionId session;
    std::string owner;
  };
  const int max_entries_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_;
  absl::flat_hash_map<std::string, std::vector<MissWaiter>> misses_;  // keys being prefilled
};

}  // namespace modrwkv::server

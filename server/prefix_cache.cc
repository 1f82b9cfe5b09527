#include "server/prefix_cache.h"

#include <openssl/evp.h>

#include <memory>

namespace modrwkv::server {

std::string PrefixCache::Key(const std::string& owner, const std::string& initial_state,
                             const std::vector<InputRows>& prefix) {
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> c(EVP_MD_CTX_new(),
                                                                  &EVP_MD_CTX_free);
  EVP_DigestInit_ex(c.get(), EVP_sha256(), nullptr);
  const uint64_t owner_size = owner.size();
  EVP_DigestUpdate(c.get(), &owner_size, sizeof owner_size);
  EVP_DigestUpdate(c.get(), owner.data(), owner.size());
  const uint64_t state_size = initial_state.size();
  EVP_DigestUpdate(c.get(), &state_size, sizeof state_size);
  EVP_DigestUpdate(c.get(), initial_state.data(), initial_state.size());
  for (const InputRows& part : prefix) {
    // Each part framed by its kind and length, so different splits never collide.
    const uint64_t head[2] = {part.tokens.empty() ? 1u : 0u,
                              part.tokens.empty() ? part.embeddings.size() : part.tokens.size()};
    EVP_DigestUpdate(c.get(), head, sizeof head);
    EVP_DigestUpdate(c.get(), part.tokens.data(), part.tokens.size() * sizeof(int32_t));
    EVP_DigestUpdate(c.get(), part.embeddings.data(), part.embeddings.size() * sizeof(float));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(c.get(), digest, &size);
  return std::string(reinterpret_cast<const char*>(digest), size);
}

std::optional<SessionId> PrefixCache::Find(const std::string& key) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->session;
}

std::vector<PrefixCache::Evicted> PrefixCache::Insert(const std::string& key, SessionId session,
                                                      const std::string& owner) {
  std::vector<Evicted> out;
  std::lock_guard<std::mutex> l(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    if (it->second->session != session) out.push_back({it->second->session, it->second->owner});
    lru_.erase(it->second);
    index_.erase(it);
  }
  if (max_entries_ <= 0) {
    out.push_back({session, owner});
    return out;
  }
  lru_.push_front(Entry{key, session, owner});
  index_[key] = lru_.begin();
  while (static_cast<int>(lru_.size()) > max_entries_) {
    out.push_back({lru_.back().session, lru_.back().owner});
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  return out;
}

void PrefixCache::Erase(const std::string& key, SessionId session) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = index_.find(key);
  if (it == index_.end() || it->second->session != session) return;
  lru_.erase(it->second);
  index_.erase(it);
}

bool PrefixCache::BeginMiss(const std::string& key, MissWaiter waiter) {
  std::lock_guard<std::mutex> l(mu_);
  auto [it, lead] = misses_.try_emplace(key);
  if (!lead) it->second.push_back(std::move(waiter));
  return lead;
}

void PrefixCache::EndMiss(const std::string& key, std::optional<SessionId> cached) {
  std::vector<MissWaiter> waiters;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = misses_.find(key);
    if (it == misses_.end()) return;
    waiters = std::move(it->second);
    misses_.erase(it);
  }
  for (MissWaiter& w : waiters) w(cached);
}

int PrefixCache::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int>(lru_.size());
}

std::vector<SessionId> PrefixCache::Sessions() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<SessionId> out;
  for (const Entry& e : lru_) out.push_back(e.session);
  return out;
}

}  // namespace modrwkv::server

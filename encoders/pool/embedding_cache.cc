// LRU by bytes: a list in use order plus an index into it.
#include "encoders/pool/embedding_cache.h"

namespace modrwkv::encoders {

std::shared_ptr<const EmbeddingRows> EmbeddingCache::Lookup(const ContentKey& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void EmbeddingCache::Insert(const ContentKey& key, std::shared_ptr<const EmbeddingRows> rows) {
  if (rows == nullptr) return;
  auto old = index_.find(key);
  if (old != index_.end()) Erase(old->second);
  const int64_t size = rows->bytes();
  if (size > capacity_) return;
  while (bytes_ + size > capacity_ && !lru_.empty()) Erase(std::prev(lru_.end()));
  lru_.emplace_front(key, std::move(rows));
  index_.emplace(key, lru_.begin());
  bytes_ += size;
}

void EmbeddingCache::Erase(std::list<Entry>::iterator it) {
  bytes_ -= it->second->bytes();
  index_.erase(it->first);
  lru_.erase(it);
}

}  // namespace modrwkv::encoders

// An LRU cache of encoder outputs, bounded by the bytes of the rows it holds. Not thread-safe:
// the encoder pool guards it with its own lock.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <utility>

#include "encoders/pool/content_key.h"
#include "encoders/pool/item_encoder.h"

namespace modrwkv::encoders {

class EmbeddingCache {
 public:
  // capacity_bytes <= 0: a cache that holds nothing.
  explicit EmbeddingCache(int64_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The rows under `key` (and marks them most recently used), or nullptr.
  std::shared_ptr<const EmbeddingRows> Lookup(const ContentKey& key);

  // Stores rows under `key`, evicting least recently used entries until they fit. Rows larger than
  // the whole capacity are not stored. Replaces an entry already under `key`.
  void Insert(const ContentKey& key, std::shared_ptr<const EmbeddingRows> rows);

  int64_t bytes() const { return bytes_; }
  size_t entries() const { return lru_.size(); }

 private:
  using Entry = std::pair<ContentKey, std::shared_ptr<const EmbeddingRows>>;
  void Erase(std::list<Entry>::iterator it);

  const int64_t capacity_;
  int64_t bytes_ = 0;     // sum of rows->bytes() over entries
  std::list<Entry> lru_;  // front: most recently used
  std::unordered_map<ContentKey, std::list<Entry>::iterator, ContentKeyHash> index_;
};

}  // namespace modrwkv::encoders

// Compiled constraints by schema, so that requests sharing a schema share its compiled grammar
// and the masks computed for it (LRU over schemas). Thread-safe.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/grammar/token_constraint.h"

namespace modrwkv::grammar {

class ConstraintCache {
 public:
  static constexpr size_t kMaxSchemaBytes = 64 * 1024;

  // `capacity`: schemas kept (each with at most TokenConstraint::kMaxCachedMasks masks); >= 1.
  ConstraintCache(std::shared_ptr<const TokenVocabulary> vocab, size_t capacity);

  // JSON mode (any JSON object).
  std::shared_ptr<const TokenConstraint> JsonObject() const { return json_object_; }
  // A JSON Schema given as JSON text; errors name `field` (and the place in the schema under it).
  absl::StatusOr<std::shared_ptr<const TokenConstraint>> ForSchema(std::string_view schema_json,
                                                                   std::string_view field_view);

  struct Stats {
    int64_t hits = 0, misses = 0;
    size_t schemas = 0;
  };
  Stats stats() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const TokenConstraint>>;

  std::shared_ptr<const TokenVocabulary> vocab_;
  size_t capacity_;
  std::shared_ptr<const TokenConstraint> json_object_;
  mutable std::mutex mu_;  // std::mutex: visible to ThreadSanitizer (Debian's Abseil is not)
  std::list<Entry> lru_;   // most recent first; key: the canonical schema
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

}  // namespace modrwkv::grammar

// Structured output at the token level: which vocabulary ids may come next in a JSON document
// under a grammar. A TokenConstraint (one per grammar and vocabulary, shared by every request that
// uses the schema) computes the allowed-token mask of a matcher state by walking the vocabulary in
// byte order, so tokens that share a prefix share its work, and caches it: a document revisits
// few distinct states, so after the first requests a step costs a hash lookup and one pass over
// the logits. A ConstrainedSequence is one sequence's position (owned by its sampler).
// See docs/structured-output.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "engine/grammar/json_grammar.h"
#include "engine/grammar/json_matcher.h"

namespace modrwkv::grammar {

// Each id's bytes, and the ids sorted by their bytes with the prefix each shares with the one
// before. Immutable; thread-safe.
class TokenVocabulary {
 public:
  // bytes[id]: the token's bytes; an empty entry (end of text, unused ids) is never allowed.
  explicit TokenVocabulary(std::vector<std::string> bytes);

  int size() const { return static_cast<int>(bytes_.size()); }
  // Empty for ids outside the table (the model's logits may be wider than the vocabulary).
  std::string_view bytes(int32_t id) const {
    return id >= 0 && id < size() ? std::string_view(bytes_[id]) : std::string_view();
  }

 private:
  friend class TokenConstraint;
  std::vector<std::string> bytes_;
  std::vector<int32_t> sorted_;  // non-empty ids in byte order
  std::vector<uint32_t> lcp_;    // bytes sorted_[i] shares with sorted_[i - 1]
  size_t max_len_ = 0;
};

// One bit per vocabulary id: 1 = may come next.
using TokenMask = std::vector<uint64_t>;

class TokenConstraint {
 public:
  // Bound on the masks kept (8 KiB each at 65,536 ids: 8 MiB); past it the cache starts over.
  static constexpr size_t kMaxCachedMasks = 1024;

  TokenConstraint(std::shared_ptr<const JsonGrammar> grammar,
                  std::shared_ptr<const TokenVocabulary> vocab);

  const JsonMatcher& matcher() const { return matcher_; }
  const TokenVocabulary& vocab() const { return *vocab_; }
  // The tokens that may follow state `s` (end tokens not included). Thread-safe.
  std::shared_ptr<const TokenMask> MaskFor(const JsonMatcher::State& s) const;

  struct Stats {
    int64_t lookups = 0, computed = 0;
    double compute_seconds = 0;  // spent computing masks
  };
  Stats stats() const;

 private:
  TokenMask ComputeMask(const JsonMatcher::State& s) const;

  std::shared_ptr<const JsonGrammar> grammar_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  JsonMatcher matcher_;
  mutable std::mutex mu_;  // std::mutex: visible to ThreadSanitizer (Debian's Abseil is not)
  mutable absl::flat_hash_map<std::string, std::shared_ptr<const TokenMask>> cache_;
  mutable std::atomic<int64_t> lookups_{0}, computed_{0}, compute_ns_{0};
};

// One sequence's place in its document. Not thread-safe (owned by the sequence's sampler).
class ConstrainedSequence {
 public:
  // `end_tokens` end the answer: allowed only where the document may end.
  ConstrainedSequence(std::shared_ptr<const TokenConstraint> constraint,
                      std::vector<int32_t> end_tokens);

  // Sets every logit that may not come next to -inf (ids past the vocabulary included).
  void MaskLogits(absl::Span<float> logits) const;
  // The lowest id that may come next (an end token if nothing else), or -1 if none.
  int32_t FirstAllowed() const;
  // Advances past `token`; an end token, or one the grammar does not allow, ends the document.
  void Accept(int32_t token);
  // Nothing more may be generated: the document is complete (or, when no end token can close
  // it, may end here), or a token outside the grammar was forced in.
  bool complete() const;

 private:
  bool IsEnd(int32_t token) const;

  std::shared_ptr<const TokenConstraint> c_;
  std::vector<int32_t> end_tokens_;
  JsonMatcher::State state_;
  bool broken_ = false;  // an end token or a token outside the grammar was accepted
};

}  // namespace modrwkv::grammar

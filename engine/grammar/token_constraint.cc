// Allowed-token masks: a walk of the byte-sorted vocabulary that keeps one matcher state per byte
// depth, so each distinct token prefix is matched once (as a trie walk would) and a refused
// prefix skips every token that starts with it.
#include "engine/grammar/token_constraint.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

namespace modrwkv::grammar {

TokenVocabulary::TokenVocabulary(std::vector<std::string> bytes) : bytes_(std::move(bytes)) {
  for (size_t id = 0; id < bytes_.size(); ++id) {
    if (!bytes_[id].empty()) sorted_.push_back(static_cast<int32_t>(id));
  }
  std::sort(sorted_.begin(), sorted_.end(),
            [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  lcp_.assign(sorted_.size(), 0);
  for (size_t i = 0; i < sorted_.size(); ++i) {
    const std::string& cur = bytes_[sorted_[i]];
    max_len_ = std::max(max_len_, cur.size());
    if (i == 0) continue;
    const std::string& prev = bytes_[sorted_[i - 1]];
    const size_t n = std::min(prev.size(), cur.size());
    size_t k = 0;
    while (k < n && prev[k] == cur[k]) ++k;
    lcp_[i] = static_cast<uint32_t>(k);
  }
}

TokenConstraint::TokenConstraint(std::shared_ptr<const JsonGrammar> grammar,
                                 std::shared_ptr<const TokenVocabulary> vocab)
    : grammar_(std::move(grammar)), vocab_(std::move(vocab)), matcher_(grammar_.get()) {}

TokenMask TokenConstraint::ComputeMask(const JsonMatcher::State& s) const {
  const TokenVocabulary& v = *vocab_;
  TokenMask mask((v.size() + 63) / 64, 0);
  // states[d]: the state after the first d bytes of the current token.
  thread_local std::vector<JsonMatcher::State> states;
  if (states.size() < v.max_len_ + 1) states.resize(v.max_len_ + 1);
  states[0].CopyFrom(s);
  size_t ok = 0;  // leading bytes of the previous token the matcher took
  for (size_t i = 0; i < v.sorted_.size(); ++i) {
    const size_t shared = v.lcp_[i];
    if (shared > ok) continue;  // starts with the prefix that was refused: so is this token
    const int32_t id = v.sorted_[i];
    const std::string& b = v.bytes_[id];
    size_t d = shared;
    for (; d < b.size(); ++d) {
      states[d + 1].CopyFrom(states[d]);
      if (!matcher_.Advance(states[d + 1], static_cast<uint8_t>(b[d]))) break;
    }
    ok = d;
    if (d == b.size()) mask[id >> 6] |= uint64_t{1} << (id & 63);
  }
  return mask;
}

std::shared_ptr<const TokenMask> TokenConstraint::MaskFor(const JsonMatcher::State& s) const {
  lookups_.fetch_add(1, std::memory_order_relaxed);
  const absl::string_view key(s.Key().data(), s.Key().size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  const auto start = std::chrono::steady_clock::now();
  auto mask = std::make_shared<const TokenMask>(ComputeMask(s));
  compute_ns_.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count(),
      std::memory_order_relaxed);
  computed_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();
  cache_.emplace(std::string(key), mask);  // another thread may have won: keeps its equal mask
  return mask;
}

TokenConstraint::Stats TokenConstraint::stats() const {
  Stats st;
  st.lookups = lookups_.load(std::memory_order_relaxed);
  st.computed = computed_.load(std::memory_order_relaxed);
  st.compute_seconds = compute_ns_.load(std::memory_order_relaxed) * 1e-9;
  return st;
}

ConstrainedSequence::ConstrainedSequence(std::shared_ptr<const TokenConstraint> constraint,
                                         std::vector<int32_t> end_tokens)
    : c_(std::move(constraint)), end_tokens_(std::move(end_tokens)) {
  std::sort(end_tokens_.begin(), end_tokens_.end());
  end_tokens_.erase(std::unique(end_tokens_.begin(), end_tokens_.end()), end_tokens_.end());
}

bool ConstrainedSequence::IsEnd(int32_t token) const {
  return std::binary_search(end_tokens_.begin(), end_tokens_.end(), token);
}

void ConstrainedSequence::MaskLogits(absl::Span<float> logits) const {
  const std::shared_ptr<const TokenMask> mask = c_->MaskFor(state_);
  const size_t n = logits.size();
  // End tokens keep their logits where the document may end (they are never in the mask).
  std::vector<std::pair<int32_t, float>> kept;
  if (c_->matcher().CanEnd(state_)) {
    for (int32_t t : end_tokens_) {
      if (t >= 0 && static_cast<size_t>(t) < n) kept.emplace_back(t, logits[t]);
    }
  }
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (size_t w = 0; w * 64 < n; ++w) {
    const uint64_t m = w < mask->size() ? (*mask)[w] : 0;  // ids past the vocabulary: never
    if (m == ~uint64_t{0}) continue;
    const size_t base = w * 64, end = std::min(n, base + 64);
    if (m == 0) {
      std::fill(logits.begin() + base, logits.begin() + end, kNegInf);
      continue;
    }
    for (size_t t = base; t < end; ++t) {
      if (!(m >> (t - base) & 1)) logits[t] = kNegInf;
    }
  }
  for (const auto& [t, v] : kept) logits[t] = v;
}

int32_t ConstrainedSequence::FirstAllowed() const {
  const std::shared_ptr<const TokenMask> mask = c_->MaskFor(state_);
  int32_t first = -1;
  for (size_t w = 0; w < mask->size(); ++w) {
    if ((*mask)[w] != 0) {
      first = static_cast<int32_t>(w * 64 + __builtin_ctzll((*mask)[w]));
      break;
    }
  }
  if (c_->matcher().CanEnd(state_) && !end_tokens_.empty() &&
      (first < 0 || end_tokens_[0] < first)) {
    first = end_tokens_[0];
  }
  return first;
}

void ConstrainedSequence::Accept(int32_t token) {
  if (broken_) return;
  if (IsEnd(token) || token < 0 || token >= c_->vocab().size()) {
    broken_ = true;
    return;
  }
  if (!c_->matcher().Advance(state_, c_->vocab().bytes(token))) broken_ = true;
}

bool ConstrainedSequence::complete() const {
  return broken_ || JsonMatcher::Complete(state_) ||
         (end_tokens_.empty() && c_->matcher().CanEnd(state_));
}

}  // namespace modrwkv::grammar

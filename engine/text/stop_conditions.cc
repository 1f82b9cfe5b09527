// Stop conditions and the incremental stop-string matcher (one KMP automaton per stop string).
#include "engine/text/stop_conditions.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "engine/base/errors.h"

namespace modrwkv {

std::string_view StopReasonName(StopReason r) {
  switch (r) {
    case StopReason::kNone:
      return "none";
    case StopReason::kStopToken:
      return "stop_token";
    case StopReason::kStopString:
      return "stop_string";
    case StopReason::kMaxTokens:
      return "max_tokens";
    case StopReason::kComplete:
      return "complete";
  }
  return "unknown";
}

absl::Status StopConditions::Validate(int vocab_size) const {
  if (max_tokens < 1) {
    return InvalidFieldError("max_tokens",
                             absl::StrFormat("max_tokens must be >= 1, got %d", max_tokens));
  }
  if (stop_token_ids.size() > static_cast<size_t>(kMaxStopTokenIds)) {
    return InvalidFieldError(
        "stop_token_ids",
        absl::StrFormat("stop_token_ids has %d entries, at most %d are allowed",
                        static_cast<int>(stop_token_ids.size()), kMaxStopTokenIds));
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0 || stop_token_ids[i] >= vocab_size) {
      return InvalidFieldError(
          absl::StrFormat("stop_token_ids[%d]", static_cast<int>(i)),
          absl::StrFormat("stop_token_ids[%d] = %d is outside the vocabulary [0, %d)",
                          static_cast<int>(i), stop_token_ids[i], vocab_size));
    }
  }
  if (stop_strings.size() > static_cast<size_t>(kMaxStopStrings)) {
    return InvalidFieldError(
        "stop_strings", absl::StrFormat("stop_strings has %d entries, at most %d are allowed",
                                        static_cast<int>(stop_strings.size()), kMaxStopStrings));
  }
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return InvalidFieldError(absl::StrFormat("stop_strings[%d]", static_cast<int>(i)),
                               absl::StrFormat("stop_strings[%d] is empty", static_cast<int>(i)));
    }
    if (stop_strings[i].size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return InvalidFieldError(
          absl::StrFormat("stop_strings[%d]", static_cast<int>(i)),
          absl::StrFormat("stop_strings[%d] is %d bytes long, at most %d are allowed",
                          static_cast<int>(i), static_cast<int>(stop_strings[i].size()),
                          kMaxStopStringBytes));
    }
  }
  return absl::OkStatus();
}

StopMatcher::StopMatcher(absl::Span<const std::string> stop_strings) {
  for (size_t index = 0; index < stop_strings.size(); ++index) {
    const std::string& s = stop_strings[index];
    if (s.empty()) continue;
    Pattern p;
    p.text = s;
    p.index = static_cast<int>(index);
    p.failure.assign(s.size(), 0);
    for (size_t i = 1, k = 0; i < s.size(); ++i) {
      while (k > 0 && s[i] != s[k]) k = p.failure[k - 1];
      if (s[i] == s[k]) ++k;
      p.failure[i] = static_cast<int>(k);
    }
    patterns_.push_back(std::move(p));
  }
}

StopMatcher::Result StopMatcher::Feed(std::string_view piece) {
  Result r;
  if (stopped_) {
    r.stopped = true;
    return r;
  }
  const size_t base = pending_.size();
  pending_.append(piece);
  for (size_t i = base; i < pending_.size(); ++i) {
    const char ch = pending_[i];
    int best = -1;
    size_t best_len = 0;
    for (size_t k = 0; k < patterns_.size(); ++k) {
      Pattern& p = patterns_[k];
      int m = p.matched;
      while (m > 0 && p.text[m] != ch) m = p.failure[m - 1];
      if (p.text[m] == ch) ++m;
      if (static_cast<size_t>(m) == p.text.size()) {
        if (p.text.size() > best_len) {
          best = p.index;
          best_len = p.text.size();
        }
        m = p.failure[m - 1];
      }
      p.matched = m;
    }
    if (best >= 0) {
      // Every pattern's partial match lies inside pending_, so the match starts inside it too.
      r.emit = pending_.substr(0, i + 1 - best_len);
      r.stopped = true;
      r.stop_index = best;
      stopped_ = true;
      pending_.clear();
      return r;
    }
  }
  size_t hold = 0;
  for (const Pattern& p : patterns_) hold = std::max(hold, static_cast<size_t>(p.matched));
  const size_t safe = pending_.size() - hold;
  r.emit = pending_.substr(0, safe);
  pending_.erase(0, safe);
  return r;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  for (Pattern& p : patterns_) p.matched = 0;
  return out;
}

}  // namespace modrwkv

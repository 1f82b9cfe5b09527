// The output protocol of one sequence, in one place: each sampled token is checked against the
// stop tokens and max_tokens, detokenized without splitting a UTF-8 character, and passed through
// the stop-string matcher, which holds back what might begin a stop string. The scheduler and the
// CLI's `generate` both use it. Not thread-safe; one per sequence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/text/stop_conditions.h"
#include "engine/text/tokenizer.h"

namespace modrwkv {

class TokenOutput {
 public:
  // `stop` must have passed StopConditions::Validate(vocab_size); `tok` outlives this.
  TokenOutput(const Tokenizer* tok, const StopConditions& stop, int vocab_size);

  struct Result {
    bool token_emitted = false;           // false for a stop token: it is not part of the output
    std::string text;                     // safe to send now
    StopReason stop = StopReason::kNone;  // kNone: go on
  };
  // `last`: the caller knows the answer ends with this token (it is emitted, then the stream
  // ends with kComplete unless a stop token or string came first).
  Result Push(int32_t token, bool last = false);
  int generated() const { return generated_; }

 private:
  bool IsStopToken(int32_t t) const {
    return t >= 0 && static_cast<size_t>(t) < stop_bits_.size() * 64 &&
           (stop_bits_[t >> 6] >> (t & 63) & 1);
  }

  StreamingDetokenizer detok_;
  StopMatcher matcher_;
  std::vector<uint64_t> stop_bits_;  // one bit per vocabulary id: O(1) whatever the list's size
  int max_tokens_;
  int generated_ = 0;
};

}  // namespace modrwkv

#include "engine/text/token_output.h"

namespace modrwkv {

TokenOutput::TokenOutput(const Tokenizer* tok, const StopConditions& stop, int vocab_size)
    : detok_(tok), matcher_(stop.stop_strings), max_tokens_(stop.max_tokens) {
  if (!stop.stop_token_ids.empty()) stop_bits_.assign((vocab_size + 63) / 64, 0);
  for (int32_t t : stop.stop_token_ids) {
    if (t >= 0 && t < vocab_size) stop_bits_[t >> 6] |= uint64_t{1} << (t & 63);
  }
}

TokenOutput::Result TokenOutput::Push(int32_t token, bool last) {
  Result r;
  if (matcher_.stopped()) {
    r.stop = StopReason::kStopString;
    return r;
  }
  ++generated_;
  // A stop token beats the length limit; neither is text.
  StopReason reason = IsStopToken(token)          ? StopReason::kStopToken
                      : last                      ? StopReason::kComplete
                      : generated_ >= max_tokens_ ? StopReason::kMaxTokens
                                                  : StopReason::kNone;
  if (reason != StopReason::kStopToken) {
    r.token_emitted = true;
    StopMatcher::Result m = matcher_.Feed(detok_.Push(token));
    r.text = std::move(m.emit);
    if (m.stopped) {
      r.stop = StopReason::kStopString;
      return r;
    }
  }
  if (reason != StopReason::kNone) {
    // The stream ends: what the detokenizer and the matcher held back is final text now.
    StopMatcher::Result m = matcher_.Feed(detok_.Flush());
    r.text += m.emit;
    if (m.stopped) {
      reason = StopReason::kStopString;
    } else {
      r.text += matcher_.Flush();
    }
  }
  r.stop = reason;
  return r;
}

}  // namespace modrwkv

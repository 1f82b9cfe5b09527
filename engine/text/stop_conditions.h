// When generation stops: stop tokens, stop strings matched in the streamed text, and max_tokens.
// TokenOutput (engine/text/token_output.h) applies them to each generated token, in order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace modrwkv {

enum class StopReason {
  kNone,        // keep going
  kStopToken,   // sampled one of stop_token_ids
  kStopString,  // the text contained one of stop_strings
  kMaxTokens,   // generated max_tokens tokens
  kComplete,    // the caller ended it: the answer is complete (a structured-output document)
};

std::string_view StopReasonName(StopReason r);  // "none", "stop_token", "stop_string",
                                                // "max_tokens", "complete"

struct StopConditions {
  static constexpr int kMaxStopStrings = 16;
  static constexpr int kMaxStopStringBytes = 256;
  static constexpr int kMaxStopTokenIds = 1024;

  std::vector<int32_t> stop_token_ids;    // ids in [0, vocab_size), at most kMaxStopTokenIds
  std::vector<std::string> stop_strings;  // non-empty, at most kMaxStopStrings of <= 256 bytes
  int max_tokens = 256;                   // >= 1

  // OK, or InvalidArgument naming the offending field.
  absl::Status Validate(int vocab_size) const;
};

// Finds stop strings in text that arrives a piece at a time (a stop string may be split across
// pieces) and decides which bytes are safe to emit: it holds back only the longest tail that is
// still a prefix of some stop string. A match ends the stream at the first byte where any stop
// string is complete (the longest one ending there, if several); that string and everything after
// it are dropped. Emitted text never ends inside a stop string's first character, so valid UTF-8
// input with valid UTF-8 stop strings is never split mid-character by the matcher.
// Not thread-safe; one per sequence. Empty stop strings are ignored.
class StopMatcher {
 public:
  explicit StopMatcher(absl::Span<const std::string> stop_strings);

  struct Result {
    std::string emit;      // safe to send now
    bool stopped = false;  // a stop string matched; `emit` ends right before it
    int stop_index = -1;   // index of the matched one in the constructor's stop_strings
  };

  // Consumes the next piece of text. After a stop every call returns an empty, stopped Result.
  Result Feed(std::string_view piece);
  // End of stream without a stop string: returns the held-back bytes ("" after a stop).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // Bytes held back at the moment.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  struct Pattern {
    std::string text;
    int index;                 // in the stop_strings given to the constructor
    std::vector<int> failure;  // KMP: failure[i] = longest proper border of text[0..i]
    int matched = 0;           // length of the longest prefix of text ending the stream so far
  };

  std::vector<Pattern> patterns_;
  std::string pending_;  // held-back bytes: a suffix of the stream, <= longest stop string - 1
  bool stopped_ = false;
};

}  // namespace modrwkv

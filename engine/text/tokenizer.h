// The RWKV "World" tokenizer (rwkv_vocab_v20230424.txt): greedy longest-match byte encoding,
// identical to the official rwkv package's TRIE_TOKENIZER, and streaming UTF-8 detokenization.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace modrwkv {

// Immutable after construction; every method is const and safe to call from many threads at once.
class Tokenizer {
 public:
  // Largest token id accepted in a vocab file (bounds the id -> bytes table).
  static constexpr int32_t kMaxTokenId = (1 << 20) - 1;

  // Parses a vocab file: one line per token, `<id> <python str or bytes literal> <byte length>`
  // (LF or CRLF line ends). Every single byte must have a token, so that any input can be encoded.
  // Errors name the line number and what was wrong.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromString(std::string_view vocab_text);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Greedy longest match over the bytes of `bytes` (need not be valid UTF-8).
  std::vector<int32_t> Encode(std::string_view bytes) const;
  // Appends to `out` instead of returning a new vector.
  void EncodeTo(std::string_view bytes, std::vector<int32_t>* out) const;

  // Concatenated token bytes (may be invalid UTF-8); InvalidArgument naming the first unknown id.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

  // The bytes of token `id`; empty for unknown ids (e.g. 0, which the world vocab leaves unused).
  std::string_view TokenBytes(int32_t id) const;
  // Every id's bytes, [vocab_size()] (empty for unknown ids): the table structured output's
  // token masks are computed over (engine/grammar).
  std::vector<std::string> AllTokenBytes() const;
  bool IsValidId(int32_t id) const;
  // Largest id in the vocab + 1 (65530 for rwkv_vocab_v20230424.txt, whose ids are 1..65529).
  int32_t vocab_size() const { return static_cast<int32_t>(spans_.size()); }
  // Number of tokens in the vocab (65529 for rwkv_vocab_v20230424.txt).
  int32_t num_tokens() const { return num_tokens_; }

 private:
  struct TokenSpan {  // where a token's bytes lie in bytes_
    uint32_t offset = 0;
    uint32_t length = 0;  // 0: no token with this id
  };
  // Double-array trie over token bytes: child of node s on byte c is t = base[s] + c when
  // check[t] == s. `token` is the id ending at that node, or -1.
  struct TrieNode {
    int32_t base = 0;
    int32_t check = -1;
    int32_t token = -1;
  };

  Tokenizer() = default;
  absl::Status BuildTrie();

  std::string bytes_;             // all token bytes, concatenated
  std::vector<TokenSpan> spans_;  // [vocab_size], indexed by id
  std::vector<TrieNode> trie_;  // node 0 is the root; padded so base + 255 never runs past the end
  int32_t num_tokens_ = 0;
};

// Turns a stream of token ids into text deltas that are always valid UTF-8 and never split a
// character. Ill-formed bytes become U+FFFD, one per maximal subpart (see utf8.h), so the
// concatenated deltas equal ReplaceInvalidUtf8(*tok->Decode(ids)). Unknown ids add no bytes.
// One instance per stream; not thread-safe. `tok` must outlive it.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer* tok);

  // Text that became complete with this token (often empty while a character is split).
  std::string Push(int32_t id);
  // End of stream: a held-back incomplete sequence becomes U+FFFD. The detokenizer is then empty
  // and may be reused for a new stream.
  std::string Flush();
  // Bytes held back waiting for the rest of a character (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  std::string pending_;  // a valid but incomplete UTF-8 prefix
};

}  // namespace modrwkv

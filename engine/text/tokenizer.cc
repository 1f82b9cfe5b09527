// RWKV World tokenizer: vocab parsing (python literals), a double-array byte trie for greedy
// longest-match encoding, decoding, and the streaming detokenizer.
#include "engine/text/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/text/utf8.h"

namespace modrwkv {
namespace {

// Debian's Abseil has its own string_view class; convert explicitly for StrCat and friends.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::string_view kLineFormat =
    "expected `<id> <python str or bytes literal> <byte length>`";

// Single-character escapes and the bytes they stand for.
constexpr std::string_view kSimpleEscapes = "\\'\"abfnrtv";
constexpr std::string_view kSimpleEscapeValues = "\\'\"\a\b\f\n\r\t\v";

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A decimal field of a vocab line: digits only, at most `max`.
absl::StatusOr<int64_t> ParseDecimal(std::string_view s, std::string_view what, int64_t max) {
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(AV(what), " is missing"));
  int64_t v = 0;
  for (char c : s) {
    if (!IsDigit(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat(AV(what), " '", absl::CHexEscape(AV(s)), "' is not a decimal number"));
    }
    v = v * 10 + (c - '0');
    if (v > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(AV(what), " ", AV(s), " is larger than the maximum ", max));
    }
  }
  return v;
}

// Reads exactly `count` hex digits at lit[*i...] (the text after \x, \u or \U).
absl::StatusOr<uint32_t> ParseHexEscape(std::string_view lit, size_t* i, int count, char kind) {
  uint32_t v = 0;
  for (int k = 0; k < count; ++k) {
    const int h = *i < lit.size() ? HexValue(lit[*i]) : -1;
    if (h < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("truncated \\%c escape: expected %d hex digits", kind, count));
    }
    v = (v << 4) | static_cast<uint32_t>(h);
    ++*i;
  }
  return v;
}

// Decodes a python str literal ('...' or "...", optional u prefix; the result is UTF-8 encoded) or
// bytes literal (b'...'), as `eval` in the official loader would. Raw strings, triple quotes,
// implicit concatenation and \N{...} are not supported (the vocab files never use them).
absl::StatusOr<std::string> ParsePythonLiteral(std::string_view lit) {
  size_t i = 0;
  bool is_bytes = false;
  while (i < lit.size() && lit[i] != '\'' && lit[i] != '"') {
    const char c = lit[i];
    if (i == 0 && (c == 'b' || c == 'B')) {
      is_bytes = true;
    } else if (i == 0 && (c == 'u' || c == 'U')) {
      // u'' is a plain str
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "literal must be a quoted python str or bytes literal (optional prefix b or u), got '",
          absl::CHexEscape(AV(lit.substr(0, 40))), "'"));
    }
    ++i;
  }
  if (i >= lit.size()) return absl::InvalidArgumentError("literal has no opening quote");
  const char quote = lit[i++];
  std::string out;
  bool closed = false;
  while (i < lit.size()) {
    const char c = lit[i];
    if (c == quote) {
      closed = true;
      ++i;
      break;
    }
    if (c == '\r' || c == '\0') {
      return absl::InvalidArgumentError(absl::StrFormat(
          "raw control byte 0x%02x inside the literal (it must be escaped)", static_cast<int>(c)));
    }
    if (c != '\\') {
      if (is_bytes && static_cast<unsigned char>(c) >= 0x80) {
        return absl::InvalidArgumentError("bytes literal contains a non-ASCII character");
      }
      out.push_back(c);  // str: the line was checked to be valid UTF-8, copy as is
      ++i;
      continue;
    }
    if (++i >= lit.size()) break;  // backslash escaping the end: unterminated
    const char e = lit[i++];
    if (const size_t k = kSimpleEscapes.find(e); k != std::string_view::npos) {
      out.push_back(kSimpleEscapeValues[k]);
      continue;
    }
    switch (e) {
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        uint32_t v = static_cast<uint32_t>(e - '0');
        for (int k = 0; k < 2 && i < lit.size() && lit[i] >= '0' && lit[i] <= '7'; ++k) {
          v = v * 8 + static_cast<uint32_t>(lit[i++] - '0');
        }
        if (is_bytes) {
          if (v > 0xFF) {
            return absl::InvalidArgumentError(
                absl::StrFormat("octal escape \\%o is larger than a byte (max \\377)", v));
          }
          out.push_back(static_cast<char>(v));
        } else {
          AppendCodepointUtf8(v, &out);  // at most U+01FF, always encodable
        }
        break;
      }
      case 'x': {
        MODRWKV_ASSIGN_OR_RETURN(uint32_t v, ParseHexEscape(lit, &i, 2, 'x'));
        if (is_bytes) {
          out.push_back(static_cast<char>(v));
        } else {
          AppendCodepointUtf8(v, &out);  // '\xff' in a str is U+00FF, two UTF-8 bytes
        }
        break;
      }
      case 'u':
      case 'U': {
        if (is_bytes) {  // not an escape in bytes literals: kept verbatim
          out.push_back('\\');
          out.push_back(e);
          break;
        }
        MODRWKV_ASSIGN_OR_RETURN(uint32_t v, ParseHexEscape(lit, &i, e == 'u' ? 4 : 8, e));
        if (!AppendCodepointUtf8(v, &out)) {
          return absl::InvalidArgumentError(
              absl::StrFormat("\\%c escape U+%04X is %s and cannot be UTF-8 encoded", e, v,
                              v > 0x10FFFF ? "beyond U+10FFFF" : "a surrogate"));
        }
        break;
      }
      case 'N':
        if (!is_bytes) return absl::InvalidArgumentError("\\N{...} escapes are not supported");
        out.append("\\N");
        break;
      default:
        // Python keeps unrecognised escapes verbatim (with a DeprecationWarning): emit the
        // backslash and re-read the escaped character as an ordinary one.
        out.push_back('\\');
        --i;
        break;
    }
  }
  if (!closed) {
    return absl::InvalidArgumentError(
        absl::StrCat("unterminated literal (no closing ", quote == '"' ? "\"" : "'", ")"));
  }
  if (i != lit.size()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected text after the closing quote: '",
                                                   absl::CHexEscape(AV(lit.substr(i, 40))), "'"));
  }
  return out;
}

struct VocabEntry {
  int32_t id;
  int line;
  std::string bytes;
};

// Parses one line (without its line end) of the vocab file.
absl::StatusOr<VocabEntry> ParseVocabLine(std::string_view line, int line_no) {
  const auto fail = [&](absl::string_view what) {
    std::string shown(line.substr(0, 80));
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line_no, ": ", what, " in '", absl::CHexEscape(shown),
                     line.size() > 80 ? "...'" : "'", "; ", AV(kLineFormat)));
  };
  if (line.empty()) return fail("empty line");
  if (!IsValidUtf8(line)) return fail("not valid UTF-8");
  const size_t first = line.find(' ');
  const size_t last = line.rfind(' ');
  if (first == std::string_view::npos || first == last) return fail("fewer than 3 fields");

  auto id = ParseDecimal(line.substr(0, first), "id", Tokenizer::kMaxTokenId);
  if (!id.ok()) return fail(id.status().message());
  auto length =
      ParseDecimal(line.substr(last + 1), "byte length", std::numeric_limits<uint32_t>::max());
  if (!length.ok()) return fail(length.status().message());

  std::string_view lit = line.substr(first + 1, last - first - 1);
  while (!lit.empty() && (lit.front() == ' ' || lit.front() == '\t')) lit.remove_prefix(1);
  while (!lit.empty() && (lit.back() == ' ' || lit.back() == '\t')) lit.remove_suffix(1);
  auto bytes = ParsePythonLiteral(lit);
  if (!bytes.ok()) return fail(bytes.status().message());
  if (bytes->empty()) return fail("empty token");
  if (static_cast<int64_t>(bytes->size()) != *length) {
    return fail(
        absl::StrCat("literal decodes to ", bytes->size(), " bytes but the line says ", *length));
  }
  return VocabEntry{static_cast<int32_t>(*id), line_no, *std::move(bytes)};
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open vocab file ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read vocab file ", path));
  auto tok = LoadFromString(text.str());
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromString(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte order mark
  if (text.empty()) return absl::InvalidArgumentError("vocab is empty");

  std::vector<VocabEntry> entries;
  int32_t max_id = -1;
  size_t total_bytes = 0;
  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {  // a final line end does not start another line
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    MODRWKV_ASSIGN_OR_RETURN(VocabEntry e, ParseVocabLine(line, line_no));
    max_id = std::max(max_id, e.id);
    total_bytes += e.bytes.size();
    entries.push_back(std::move(e));
  }
  if (total_bytes > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("vocab holds more than 4 GiB of token bytes");
  }

  auto tok = std::unique_ptr<Tokenizer>(new Tokenizer());
  tok->spans_.resize(static_cast<size_t>(max_id) + 1);
  tok->bytes_.reserve(total_bytes);
  std::vector<int> defined_on(tok->spans_.size(), 0);
  for (const VocabEntry& e : entries) {
    if (defined_on[e.id] != 0) {
      return absl::InvalidArgumentError(absl::StrCat("line ", e.line, ": duplicate id ", e.id,
                                                     " (first defined on line ", defined_on[e.id],
                                                     ")"));
    }
    defined_on[e.id] = e.line;
    tok->spans_[e.id] = {static_cast<uint32_t>(tok->bytes_.size()),
                         static_cast<uint32_t>(e.bytes.size())};
    tok->bytes_ += e.bytes;
  }
  tok->num_tokens_ = static_cast<int32_t>(entries.size());
  MODRWKV_RETURN_IF_ERROR(tok->BuildTrie());
  return tok;
}

// Builds the double-array trie breadth first from the tokens sorted by bytes. When two ids have
// the same bytes, the one on the later line wins, as in the official loader (its bytes -> id dict
// is filled in file order).
absl::Status Tokenizer::BuildTrie() {
  std::vector<int32_t> order;  // ids that own their bytes, sorted by bytes
  for (int32_t id = 0; id < vocab_size(); ++id) {
    if (spans_[id].length != 0) order.push_back(id);
  }
  // Ties (equal bytes) are ordered by file position: offsets into bytes_ grow in file order.
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const int c = TokenBytes(a).compare(TokenBytes(b));
    return c != 0 ? c < 0 : spans_[a].offset < spans_[b].offset;
  });
  {
    size_t w = 0;
    for (size_t r = 0; r < order.size(); ++r) {
      if (r + 1 < order.size() && TokenBytes(order[r]) == TokenBytes(order[r + 1])) continue;
      order[w++] = order[r];  // keeps the last of each run of equal bytes
    }
    order.resize(w);
  }

  trie_.assign(512, TrieNode{});
  trie_[0].check = -2;    // the root is nobody's child, and its slot is not free
  size_t first_free = 1;  // every slot below it is used

  struct Pending {
    int32_t node;
    size_t lo, hi;  // range of `order` whose keys go through this node
    size_t depth;   // bytes consumed to reach it
  };
  std::vector<Pending> queue = {{0, 0, order.size(), 0}};
  std::vector<uint8_t> labels;
  std::vector<std::pair<size_t, size_t>> ranges;  // per label, its range of `order`
  for (size_t q = 0; q < queue.size(); ++q) {
    const Pending cur = queue[q];
    size_t lo = cur.lo;
    if (lo < cur.hi && TokenBytes(order[lo]).size() == cur.depth) {
      trie_[cur.node].token = order[lo];  // sorted: the key ending here comes first
      ++lo;
    }
    if (lo == cur.hi) continue;  // a leaf keeps base 0; no slot has check == leaf
    labels.clear();
    ranges.clear();
    for (size_t k = lo; k < cur.hi;) {
      const auto c = static_cast<uint8_t>(TokenBytes(order[k])[cur.depth]);
      size_t e = k + 1;
      while (e < cur.hi && static_cast<uint8_t>(TokenBytes(order[e])[cur.depth]) == c) ++e;
      labels.push_back(c);
      ranges.emplace_back(k, e);
      k = e;
    }
    // First fit: the lowest base whose slots for all labels are free.
    while (first_free < trie_.size() && trie_[first_free].check != -1) ++first_free;
    size_t base = 0;
    for (size_t p = std::max<size_t>(first_free, labels[0] + 1);; ++p) {
      if (p + 256 >= trie_.size()) trie_.resize(std::max(trie_.size() * 2, p + 512));
      if (trie_[p].check != -1) continue;
      base = p - labels[0];
      bool fits = true;
      for (size_t k = 1; k < labels.size() && fits; ++k) fits = trie_[base + labels[k]].check == -1;
      if (fits) break;
    }
    if (base > static_cast<size_t>(std::numeric_limits<int32_t>::max()) - 512) {
      return absl::ResourceExhaustedError("vocab too large for the tokenizer trie");
    }
    trie_[cur.node].base = static_cast<int32_t>(base);
    for (size_t k = 0; k < labels.size(); ++k) {
      const auto child = static_cast<int32_t>(base + labels[k]);
      trie_[child].check = cur.node;
      queue.push_back({child, ranges[k].first, ranges[k].second, cur.depth + 1});
    }
  }
  // Shrink to the last used slot plus room for base + 255 of any node.
  size_t used = trie_.size();
  while (used > 1 && trie_[used - 1].check == -1) --used;
  trie_.resize(used + 256);
  trie_.shrink_to_fit();

  for (int b = 0; b < 256; ++b) {
    const int32_t t = trie_[0].base + b;
    if (trie_[t].check != 0 || trie_[t].token < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vocab has no token for the single byte 0x%02x; every byte needs one so that any input "
          "can be encoded (the world vocab uses ids 1..256, id = byte + 1)",
          b));
    }
  }
  return absl::OkStatus();
}

std::vector<int32_t> Tokenizer::Encode(std::string_view bytes) const {
  std::vector<int32_t> out;
  out.reserve(bytes.size() / 3 + 1);
  EncodeTo(bytes, &out);
  return out;
}

void Tokenizer::EncodeTo(std::string_view bytes, std::vector<int32_t>* out) const {
  const TrieNode* t = trie_.data();
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    int32_t s = 0;
    int32_t best = -1;
    size_t best_end = i + 1;
    for (size_t j = i; j < n; ++j) {
      const int32_t next = t[s].base + p[j];  // in bounds: trie_ is padded by 256 past any base
      if (t[next].check != s) break;
      s = next;
      if (t[s].token >= 0) {
        best = t[s].token;
        best_end = j + 1;
      }
    }
    // best >= 0 always: LoadFromString checks that every single byte has a token.
    if (best >= 0) out->push_back(best);
    i = best_end;
  }
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  size_t total = 0;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (!IsValidId(ids[k])) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[k], " at position ", k,
                                                     " is not in the vocab (vocab_size ",
                                                     vocab_size(), ")"));
    }
    total += spans_[ids[k]].length;
  }
  std::string out;
  out.reserve(total);
  for (int32_t id : ids) out.append(TokenBytes(id));
  return out;
}

std::vector<std::string> Tokenizer::AllTokenBytes() const {
  std::vector<std::string> out(vocab_size());
  for (int32_t id = 0; id < vocab_size(); ++id) out[id] = std::string(TokenBytes(id));
  return out;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return std::string_view(bytes_).substr(spans_[id].offset, spans_[id].length);
}

bool Tokenizer::IsValidId(int32_t id) const {
  return id >= 0 && id < vocab_size() && spans_[id].length != 0;
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer* tok) : tok_(tok) {}

std::string StreamingDetokenizer::Push(int32_t id) {
  pending_.append(tok_->TokenBytes(id));
  std::string out;
  const size_t consumed = AppendUtf8Replacing(pending_, /*final=*/false, &out);
  pending_.erase(0, consumed);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  AppendUtf8Replacing(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace modrwkv

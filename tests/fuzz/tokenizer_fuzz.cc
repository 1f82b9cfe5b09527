// libFuzzer harness for engine/tokenizer.cc: vocab parsing of arbitrary bytes must never crash, and
// on any vocab that loads, encode -> decode is the identity and streaming detokenization equals the
// one-shot U+FFFD replacement of the decoded bytes.
//
// Input layout: <extra vocab lines> '\0' <text>. The extra lines are appended to a vocab of the 256
// single bytes (ids 1..256); when they do not parse, the text is encoded with the bytes-only vocab.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// The sources under test are compiled in (instrumented with the harness, whichever build).
#include "engine/text/tokenizer.cc"
#include "engine/text/utf8.cc"

namespace {

const std::string& ByteVocab() {
  static const std::string* v = [] {
    auto* s = new std::string;
    static const char kHex[] = "0123456789abcdef";
    for (int b = 0; b < 256; ++b) {
      *s += std::to_string(b + 1) + " b'\\x" + kHex[b >> 4] + kHex[b & 15] + "' 1\n";
    }
    return s;
  }();
  return *v;
}

const modrwkv::Tokenizer& BytesOnly() {
  static const modrwkv::Tokenizer* t = modrwkv::Tokenizer::LoadFromString(ByteVocab())->release();
  return *t;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void RoundTrip(const modrwkv::Tokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.Encode(text);
  for (int32_t id : ids) Check(tok.IsValidId(id));
  auto decoded = tok.Decode(ids);
  Check(decoded.ok() && *decoded == text);

  modrwkv::StreamingDetokenizer detok(&tok);
  std::string streamed;
  for (int32_t id : ids) {
    std::string delta = detok.Push(id);
    Check(modrwkv::IsValidUtf8(delta));
    streamed += delta;
    Check(detok.pending_bytes() <= 3);
  }
  std::string tail = detok.Flush();
  Check(modrwkv::IsValidUtf8(tail));
  Check(streamed + tail == modrwkv::ReplaceInvalidUtf8(text));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  // The whole input as a vocab: any outcome but a crash is fine.
  auto whole = modrwkv::Tokenizer::LoadFromString(in);
  if (whole.ok()) RoundTrip(**whole, in);

  const size_t sep = in.find('\0');
  const std::string_view extra = in.substr(0, sep);
  const std::string_view text = sep == std::string_view::npos ? in : in.substr(sep + 1);
  auto extended = modrwkv::Tokenizer::LoadFromString(ByteVocab() + std::string(extra));
  RoundTrip(extended.ok() ? **extended : BytesOnly(), text);
  return 0;
}

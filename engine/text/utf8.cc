// UTF-8 validation and U+FFFD replacement following the Unicode "maximal subpart" rule.
#include "engine/text/utf8.h"

namespace modrwkv {
namespace {

enum class SeqKind { kValid, kInvalid, kIncomplete };

// Classifies the sequence starting at p[0] (n >= 1 bytes available) per Unicode Table 3-7 and sets
// *len to its length: the whole character when valid, the maximal subpart when invalid (at least
// 1), everything available when it is a valid but truncated prefix.
SeqKind ScanSequence(const unsigned char* p, size_t n, size_t* len) {
  const unsigned char b = p[0];
  size_t need;                         // total length of the character
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b < 0x80) {
    *len = 1;
    return SeqKind::kValid;
  } else if (b < 0xC2) {  // continuation byte or overlong 2-byte lead
    *len = 1;
    return SeqKind::kInvalid;
  } else if (b < 0xE0) {
    need = 2;
  } else if (b < 0xF0) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b < 0xF5) {
    need = 4;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *len = 1;
    return SeqKind::kInvalid;
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= n) {
      *len = k;
      return SeqKind::kIncomplete;
    }
    const unsigned char c = p[k];
    if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) {
      *len = k;
      return SeqKind::kInvalid;
    }
  }
  *len = need;
  return SeqKind::kValid;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    if (ScanSequence(p + i, s.size() - i, &len) != SeqKind::kValid) return false;
    i += len;
  }
  return true;
}

bool AppendCodepointUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    return false;
  }
  return true;
}

size_t AppendUtf8Replacing(std::string_view in, bool final, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && p[j] < 0x80) ++j;  // ASCII run
    out->append(in.data() + i, j - i);
    i = j;
    if (i == n) break;
    size_t len;
    switch (ScanSequence(p + i, n - i, &len)) {
      case SeqKind::kValid:
        out->append(in.data() + i, len);
        break;
      case SeqKind::kInvalid:
        out->append(kUtf8Replacement);
        break;
      case SeqKind::kIncomplete:
        if (!final) return i;  // may still be completed by later bytes
        out->append(kUtf8Replacement);
        break;
    }
    i += len;
  }
  return n;
}

std::string ReplaceInvalidUtf8(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  AppendUtf8Replacing(in, /*final=*/true, &out);
  return out;
}

}  // namespace modrwkv

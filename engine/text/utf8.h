// UTF-8 validation and replacement of ill-formed sequences with U+FFFD, one-shot and incremental
// (for streaming detokenization). Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace modrwkv {

// U+FFFD REPLACEMENT CHARACTER, UTF-8 encoded.
inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";

// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Appends the UTF-8 encoding of `cp` to `out`. Returns false (and appends nothing) for surrogates
// (U+D800..U+DFFF) and values above U+10FFFF.
bool AppendCodepointUtf8(uint32_t cp, std::string* out);

// Copies `in` to `out`, replacing each maximal subpart of an ill-formed sequence with one U+FFFD
// (Unicode 15 §3.9 "U+FFFD Substitution of Maximal Subparts", the WHATWG UTF-8 decoder; CPython's
// bytes.decode("utf-8", "replace") behaves the same).
//
// With `final` false, a trailing sequence that is incomplete but could still become valid (e.g.
// F0 9F 98 at the very end) is not consumed; with `final` true it becomes one U+FFFD.
// Returns the number of bytes of `in` consumed (in.size() when `final`).
size_t AppendUtf8Replacing(std::string_view in, bool final, std::string* out);

// One-shot form of AppendUtf8Replacing(in, /*final=*/true, ...).
std::string ReplaceInvalidUtf8(std::string_view in);

}  // namespace modrwkv

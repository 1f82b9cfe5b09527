// The byte-level pushdown automaton of a JsonGrammar: a fixed-size state (a stack of frames, one
// per open value) advanced one byte at a time, which refuses any byte that cannot continue a
// document valid under the grammar. Plain data: copy it to try a continuation. Not thread-safe
// per state; the grammar is shared read-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "engine/grammar/json_grammar.h"

namespace modrwkv::grammar {

// Limits that keep every document finite and the set of states small.
// Insignificant whitespace is at most one space between the tokens of a document (as Outlines
// does by default), none before or after it: JSON allows runs without end, and weak models fill
// their answers with them (a trained demo model spent its whole budget on tabs).
inline constexpr int kMaxIntegerDigits = 16;
inline constexpr int kMaxFractionDigits = 16;
inline constexpr int kMaxExponentDigits = 2;  // every number stays a finite double

// One open value. No padding: states are hashed and compared as bytes.
struct Frame {
  int32_t node = 0;    // grammar node (a concrete kind, never a union)
  uint8_t phase = 0;   // where in the value (per kind, json_matcher.cc)
  uint8_t sub = 0;     // string: UTF-8 continuation bytes or hex digits still due
  uint8_t range = 0;   // string: the allowed range of the next continuation byte; in a \u
                       // escape: 1 = it must be a low surrogate
  uint8_t aux = 0;     // string, in a \u escape: 1 = the first digit was d, 2 = a high
                       // surrogate, whose low half must follow
  uint32_t count = 0;  // string: code points; array: items; number: digits in this run;
                       // literal / object key: trie node; object value: property index
  uint32_t zero2 = 0;  // always 0
  uint64_t used = 0;   // object: the properties written so far
};
static_assert(sizeof(Frame) == 24);

class JsonMatcher {
 public:
  struct State {
    uint8_t depth = 0;  // open frames
    uint8_t ws = 0;     // 1: the last byte was insignificant whitespace
    uint8_t done = 0;   // the top-level value is complete
    uint8_t zero = 0;
    Frame frames[JsonGrammar::kMaxDepth];

    // The bytes that identify the state (the header and the open frames).
    std::string_view Key() const {
      return {reinterpret_cast<const char*>(this), offsetof(State, frames) + depth * sizeof(Frame)};
    }
    void CopyFrom(const State& o) { std::memcpy(this, &o, o.Key().size()); }
  };

  explicit JsonMatcher(const JsonGrammar* g) : g_(g) {}

  // Consumes one byte; false (and `s` unspecified) if no valid document continues with it.
  bool Advance(State& s, uint8_t byte) const;
  bool Advance(State& s, std::string_view bytes) const {
    for (const char c : bytes) {
      if (!Advance(s, static_cast<uint8_t>(c))) return false;
    }
    return true;
  }
  // The document is complete and nothing may follow.
  static bool Complete(const State& s) { return s.done != 0; }
  // The document may end here (complete, or a top-level number or literal that could go on).
  bool CanEnd(const State& s) const;

 private:
  bool StartValue(State& s, int32_t node, uint8_t byte) const;
  bool Push(State& s, int32_t node, uint8_t phase, uint32_t count) const;
  void ValueDone(State& s) const;
  static bool Whitespace(State& s, uint8_t byte);

  bool AdvanceObject(State& s, Frame& f, uint8_t byte) const;
  bool AdvanceArray(State& s, Frame& f, uint8_t byte) const;
  bool AdvanceString(State& s, Frame& f, uint8_t byte) const;
  // Number and literal frames may end without a terminator of their own: *pop is set when the
  // byte belongs to the enclosing value instead.
  bool AdvanceNumber(Frame& f, uint8_t byte, bool* pop) const;
  bool AdvanceLiteral(State& s, Frame& f, uint8_t byte, bool* pop) const;

  const JsonGrammar* g_;
};

}  // namespace modrwkv::grammar

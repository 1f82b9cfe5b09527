// The matcher's transitions, one function per kind of open value. Strings are checked as UTF-8
// (the ranges of RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF), so a
// constrained answer is always valid JSON text, token boundaries notwithstanding.
#include "engine/grammar/json_matcher.h"

namespace modrwkv::grammar {
namespace {

// Frame::node of an object's free key (a string without limits).
constexpr int32_t kKeyString = -1;

enum ObjectPhase : uint8_t {
  kObjOpen,         // after '{'
  kObjKey,          // inside a listed key; count = key trie node
  kObjFreeKey,      // a free key's string frame is open above
  kObjAfterKey,     // before ':'; count = property index (listed keys)
  kObjBeforeValue,  // after ':'
  kObjInValue,      // the value's frame is open above
  kObjAfterValue,   // before ',' or '}'
  kObjAfterComma,   // before the next key
};

enum ArrayPhase : uint8_t { kArrOpen, kArrInItem, kArrAfterItem, kArrAfterComma };

enum StringPhase : uint8_t {
  kStrBody,
  kStrEscape,    // after '\\'
  kStrHex,       // in \uXXXX; sub = digits still due
  kStrLowSlash,  // after a high surrogate's escape: its low half's '\\' is due
  kStrLowU,      // ... and then its 'u'
};

enum NumberPhase : uint8_t {
  kNumMinus,  // after '-'
  kNumZero,   // a leading 0 (accepting)
  kNumInt,    // integer digits (accepting)
  kNumDot,
  kNumFrac,  // fraction digits (accepting)
  kNumE,
  kNumESign,
  kNumExp,  // exponent digits (accepting)
};

// The range of the next UTF-8 continuation byte (Frame::range).
constexpr uint8_t kContLo[] = {0x80, 0xA0, 0x80, 0x90, 0x80};
constexpr uint8_t kContHi[] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};

bool IsWhitespace(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(uint8_t b) { return b >= '0' && b <= '9'; }
bool IsHex(uint8_t b) { return IsDigit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }

// Bit set of an object's listed properties.
uint64_t AllKeys(const GrammarNode& n) {
  return n.keys.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << n.keys.size()) - 1;
}

}  // namespace

bool JsonMatcher::Whitespace(State& s, uint8_t byte) {
  if (s.ws != 0 || byte != ' ') return false;
  s.ws = 1;
  return true;
}

bool JsonMatcher::Push(State& s, int32_t node, uint8_t phase, uint32_t count) const {
  if (s.depth >= JsonGrammar::kMaxDepth) return false;
  Frame& f = s.frames[s.depth++];
  f = Frame{};
  f.node = node;
  f.phase = phase;
  f.count = count;
  return true;
}

// The frame on top was just closed (and popped): its parent moves past the value.
void JsonMatcher::ValueDone(State& s) const {
  if (s.depth == 0) {
    s.done = 1;
    return;
  }
  Frame& p = s.frames[s.depth - 1];
  const GrammarNode& n = g_->node(p.node);
  if (n.kind == NodeKind::kObject) {
    if (p.phase == kObjFreeKey) {
      p.phase = kObjAfterKey;
    } else {
      if (n.additional < 0) p.used |= uint64_t{1} << p.count;
      p.phase = kObjAfterValue;
    }
  } else {  // an array
    ++p.count;
    p.phase = kArrAfterItem;
  }
}

bool JsonMatcher::StartValue(State& s, int32_t node, uint8_t byte) const {
  const GrammarNode* n = &g_->node(node);
  if (n->kind == NodeKind::kUnion) {
    const int alt = n->first_byte[byte];
    if (alt < 0) return false;
    node = n->alternatives[alt];
    n = &g_->node(node);
  }
  switch (n->kind) {
    // A container leaves room above it for a string or number frame, so that the innermost
    // one can always be given a value.
    case NodeKind::kObject:
      return byte == '{' && s.depth + 1 < JsonGrammar::kMaxDepth && Push(s, node, kObjOpen, 0);
    case NodeKind::kArray:
      return byte == '[' && s.depth + 1 < JsonGrammar::kMaxDepth && Push(s, node, kArrOpen, 0);
    case NodeKind::kString:
      return byte == '"' && Push(s, node, kStrBody, 0);
    case NodeKind::kNumber:
    case NodeKind::kInteger:
      if (byte == '-') return Push(s, node, kNumMinus, 0);
      if (byte == '0') return Push(s, node, kNumZero, 1);
      if (IsDigit(byte)) return Push(s, node, kNumInt, 1);
      return false;
    case NodeKind::kLiteral: {
      const ByteTrie& t = g_->trie(n->literal_trie);
      const int32_t child = t.Child(0, byte);
      if (child < 0) return false;
      if (t.nodes[child].terminal >= 0 && t.nodes[child].children.empty()) {
        ValueDone(s);  // a one-byte literal
        return true;
      }
      return Push(s, node, 0, static_cast<uint32_t>(child));
    }
    case NodeKind::kUnion:
      return false;  // unions are flat: never an alternative of a union
  }
  return false;
}

bool JsonMatcher::Advance(State& s, uint8_t byte) const {
  if (s.done) return false;
  if (s.depth == 0) return StartValue(s, g_->root(), byte);  // the answer starts with its value
  for (;;) {
    Frame& f = s.frames[s.depth - 1];
    const NodeKind kind = f.node == kKeyString ? NodeKind::kString : g_->node(f.node).kind;
    bool pop = false;
    switch (kind) {
      case NodeKind::kObject:
        return AdvanceObject(s, f, byte);
      case NodeKind::kArray:
        return AdvanceArray(s, f, byte);
      case NodeKind::kString:
        return AdvanceString(s, f, byte);
      case NodeKind::kNumber:
      case NodeKind::kInteger:
        if (!AdvanceNumber(f, byte, &pop)) return false;
        break;
      case NodeKind::kLiteral:
        if (!AdvanceLiteral(s, f, byte, &pop)) return false;
        break;
      case NodeKind::kUnion:
        return false;
    }
    if (!pop) return true;
    // The number or literal ended before this byte: the enclosing value takes it.
    --s.depth;
    ValueDone(s);
    if (s.done) return false;  // nothing follows a top-level value
  }
}

bool JsonMatcher::AdvanceObject(State& s, Frame& f, uint8_t byte) const {
  const GrammarNode& n = g_->node(f.node);
  const bool listed = n.additional < 0;
  const bool structural = f.phase != kObjKey;
  if (structural && IsWhitespace(byte)) {
    return f.phase != kObjFreeKey && f.phase != kObjInValue && Whitespace(s, byte);
  }
  s.ws = 0;
  auto close = [&] {
    if (listed && (n.required & ~f.used) != 0) return false;
    --s.depth;
    ValueDone(s);
    return true;
  };
  switch (f.phase) {
    case kObjOpen:
    case kObjAfterComma:
      if (byte == '}' && f.phase == kObjOpen) return close();
      if (byte != '"') return false;
      if (!listed) {
        f.phase = kObjFreeKey;
        return Push(s, kKeyString, kStrBody, 0);
      }
      if ((g_->trie(n.key_trie).nodes[0].subtree & ~f.used) == 0) return false;
      f.phase = kObjKey;
      f.count = 0;
      return true;
    case kObjKey: {
      const ByteTrie& t = g_->trie(n.key_trie);
      const int32_t child = t.Child(static_cast<int32_t>(f.count), byte);
      if (child < 0 || (t.nodes[child].subtree & ~f.used) == 0) return false;
      if (t.nodes[child].terminal >= 0) {  // the closing quote: keys are prefix-free
        f.count = static_cast<uint32_t>(t.nodes[child].terminal);
        f.phase = kObjAfterKey;
      } else {
        f.count = static_cast<uint32_t>(child);
      }
      return true;
    }
    case kObjAfterKey:
      if (byte != ':') return false;
      f.phase = kObjBeforeValue;
      return true;
    case kObjBeforeValue:
      f.phase = kObjInValue;
      return StartValue(s, listed ? n.values[f.count] : n.additional, byte);
    case kObjAfterValue:
      if (byte == '}') return close();
      if (byte != ',') return false;
      if (listed && (AllKeys(n) & ~f.used) == 0) return false;
      f.phase = kObjAfterComma;
      return true;
    default:
      return false;
  }
}

bool JsonMatcher::AdvanceArray(State& s, Frame& f, uint8_t byte) const {
  const GrammarNode& n = g_->node(f.node);
  if (IsWhitespace(byte)) return f.phase != kArrInItem && Whitespace(s, byte);
  s.ws = 0;
  switch (f.phase) {
    case kArrOpen:
    case kArrAfterComma:
      if (byte == ']' && f.phase == kArrOpen && n.min_items == 0) {
        --s.depth;
        ValueDone(s);
        return true;
      }
      if (f.count >= n.max_items) return false;
      f.phase = kArrInItem;
      return StartValue(s, n.items, byte);
    case kArrAfterItem:
      if (byte == ',') {
        if (f.count >= n.max_items) return false;
        f.phase = kArrAfterComma;
        return true;
      }
      if (byte == ']' && f.count >= n.min_items) {
        --s.depth;
        ValueDone(s);
        return true;
      }
      return false;
    default:
      return false;
  }
}

bool JsonMatcher::AdvanceString(State& s, Frame& f, uint8_t byte) const {
  uint32_t min_len = 0, max_len = UINT32_MAX;
  if (f.node != kKeyString) {
    const GrammarNode& n = g_->node(f.node);
    min_len = n.min_length;
    max_len = n.max_length;
  }
  switch (f.phase) {
    case kStrEscape:
      if (byte == 'u') {
        f.phase = kStrHex;
        f.sub = 4;
        return true;
      }
      if (byte == '"' || byte == '\\' || byte == '/' || byte == 'b' || byte == 'f' || byte == 'n' ||
          byte == 'r' || byte == 't') {
        f.phase = kStrBody;
        return true;
      }
      return false;
    case kStrHex: {
      // Escapes of UTF-16 surrogates come in pairs (a lone one is not text: strict parsers
      // refuse it), so a high surrogate's escape must be followed by a low one's.
      if (!IsHex(byte)) return false;
      const bool d = byte == 'd' || byte == 'D';
      const bool c_to_f = (byte >= 'c' && byte <= 'f') || (byte >= 'C' && byte <= 'F');
      const bool eight_to_b = (byte >= '8' && byte <= '9') || (byte >= 'a' && byte <= 'b') ||
                              (byte >= 'A' && byte <= 'B');
      const int digit = 4 - f.sub;
      if (digit == 0) {
        if (f.range == 1 && !d) return false;
        f.aux = d ? 1 : 0;
      } else if (digit == 1) {
        if (f.range == 1 && !c_to_f) return false;
        if (f.range != 1 && f.aux == 1) {
          if (c_to_f) return false;  // a low surrogate without its high half
          f.aux = eight_to_b ? 2 : 0;
        }
      }
      if (--f.sub == 0) {
        f.phase = f.aux == 2 ? kStrLowSlash : kStrBody;
        f.aux = 0;
        f.range = 0;
      }
      return true;
    }
    case kStrLowSlash:
      if (byte != '\\') return false;
      f.phase = kStrLowU;
      return true;
    case kStrLowU:
      if (byte != 'u') return false;
      f.phase = kStrHex;
      f.sub = 4;
      f.range = 1;
      return true;
    default:
      break;
  }
  if (f.sub > 0) {  // inside a multi-byte character
    if (byte < kContLo[f.range] || byte > kContHi[f.range]) return false;
    --f.sub;
    f.range = 0;
    return true;
  }
  if (byte == '"') {
    if (f.count < min_len) return false;
    --s.depth;
    ValueDone(s);
    return true;
  }
  if (byte < 0x20 || f.count >= max_len) return false;
  if (byte == '\\') {
    f.phase = kStrEscape;
  } else if (byte >= 0x80) {
    if (byte >= 0xC2 && byte <= 0xDF) {
      f.sub = 1;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      f.sub = 2;
      f.range = byte == 0xE0 ? 1 : byte == 0xED ? 2 : 0;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      f.sub = 3;
      f.range = byte == 0xF0 ? 3 : byte == 0xF4 ? 4 : 0;
    } else {
      return false;  // a continuation byte out of place, or never valid in UTF-8
    }
  }
  ++f.count;
  return true;
}

bool JsonMatcher::AdvanceNumber(Frame& f, uint8_t byte, bool* pop) const {
  const bool integer = g_->node(f.node).kind == NodeKind::kInteger;
  const bool digit = IsDigit(byte);
  switch (f.phase) {
    case kNumMinus:
      if (!digit) return false;
      f.phase = byte == '0' ? kNumZero : kNumInt;
      f.count = 1;
      return true;
    case kNumInt:
      if (digit) return ++f.count <= kMaxIntegerDigits;
      [[fallthrough]];
    case kNumZero:
      if (!integer && byte == '.') {
        f.phase = kNumDot;
        return true;
      }
      if (!integer && (byte == 'e' || byte == 'E')) {
        f.phase = kNumE;
        return true;
      }
      if (digit) return false;  // no leading zeros
      *pop = true;
      return true;
    case kNumDot:
      if (!digit) return false;
      f.phase = kNumFrac;
      f.count = 1;
      return true;
    case kNumFrac:
      if (digit) return ++f.count <= kMaxFractionDigits;
      if (byte == 'e' || byte == 'E') {
        f.phase = kNumE;
        return true;
      }
      *pop = true;
      return true;
    case kNumE:
      if (byte == '+' || byte == '-') {
        f.phase = kNumESign;
        return true;
      }
      [[fallthrough]];
    case kNumESign:
      if (!digit) return false;
      f.phase = kNumExp;
      f.count = 1;
      return true;
    case kNumExp:
      if (digit) return ++f.count <= kMaxExponentDigits;
      *pop = true;
      return true;
    default:
      return false;
  }
}

bool JsonMatcher::AdvanceLiteral(State& s, Frame& f, uint8_t byte, bool* pop) const {
  const ByteTrie& t = g_->trie(g_->node(f.node).literal_trie);
  const int32_t child = t.Child(static_cast<int32_t>(f.count), byte);
  if (child < 0) {
    if (t.nodes[f.count].terminal < 0) return false;
    *pop = true;  // a complete member that another member extends ("1" of ["1", "12"])
    return true;
  }
  f.count = static_cast<uint32_t>(child);
  if (t.nodes[child].terminal >= 0 && t.nodes[child].children.empty()) {
    --s.depth;
    ValueDone(s);
  }
  return true;
}

bool JsonMatcher::CanEnd(const State& s) const {
  if (s.done) return true;
  if (s.depth != 1) return false;
  const Frame& f = s.frames[0];
  const GrammarNode& n = g_->node(f.node);
  switch (n.kind) {
    case NodeKind::kNumber:
    case NodeKind::kInteger:
      return f.phase == kNumZero || f.phase == kNumInt || f.phase == kNumFrac || f.phase == kNumExp;
    case NodeKind::kLiteral:
      return g_->trie(n.literal_trie).nodes[f.count].terminal >= 0;
    default:
      return false;
  }
}

}  // namespace modrwkv::grammar

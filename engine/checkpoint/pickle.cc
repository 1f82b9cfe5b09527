// Bounded pickle virtual machine (see pickle.h). Mirrors CPython's Unpickler for the opcodes it
// accepts, including its mark semantics: after MARK only the items pushed since are poppable.
#include "engine/checkpoint/pickle.h"

#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/checkpoint/le_bytes.h"

namespace modrwkv::pickle {

absl::string_view KindName(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kObject:
      return "object";
    case Kind::kPersistentId:
      return "persistent id";
  }
  return "?";
}

namespace {

enum Op : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNoneOp = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinUnicode = 'X',
  kEmptyList = ']',
  kAppend = 'a',
  kBuild = 'b',
  kGlobalOp = 'c',
  kDictOp = 'd',
  kAppends = 'e',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kListOp = 'l',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTupleOp = 't',
  kSetItems = 'u',
  kEmptyDict = '}',
  kEmptyTuple = ')',
  kBinFloat = 'G',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kProto = 0x80,
  kNewObj = 0x81,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

class Machine {
 public:
  Machine(absl::Span<const uint8_t> data, const Limits& limits) : d_(data), lim_(limits) {}

  absl::StatusOr<Graph> Run() {
    while (pos_ < d_.size()) {
      op_pos_ = pos_;
      op_ = d_[pos_++];
      if (op_ == kStop) {
        if (Available() == 0) return Err("STOP with an empty stack");
        g_.root = stack_.back();
        return std::move(g_);
      }
      absl::Status st = Step();
      if (!st.ok()) return st;
    }
    return absl::DataLossError(
        absl::StrCat("pickle ends at byte ", d_.size(), " without STOP (truncated?)"));
  }

 private:
  absl::Status Err(absl::string_view what) const {
    return absl::DataLossError(
        absl::StrFormat("pickle opcode 0x%02x at byte %d: %s", op_, op_pos_, what));
  }

  size_t Base() const { return marks_.empty() ? 0 : marks_.back(); }
  size_t Available() const { return stack_.size() - Base(); }

  absl::Status Need(uint64_t n) const {
    if (n > d_.size() - pos_) {
      return Err(absl::StrCat("needs ", n, " bytes but only ", d_.size() - pos_, " remain"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<NodeId> New(Kind kind) {
    if (g_.nodes.size() >= lim_.max_nodes) {
      return Err(absl::StrCat("more than ", lim_.max_nodes, " values"));
    }
    g_.nodes.emplace_back();
    g_.nodes.back().kind = kind;
    return static_cast<NodeId>(g_.nodes.size() - 1);
  }

  absl::Status Push(NodeId id) {
    if (stack_.size() >= lim_.max_stack) {
      return Err(absl::StrCat("stack deeper than ", lim_.max_stack));
    }
    stack_.push_back(id);
    return absl::OkStatus();
  }

  absl::Status PushNew(Kind kind, int64_t i = 0) {
    auto id = New(kind);
    if (!id.ok()) return id.status();
    g_.nodes[*id].i = i;
    return Push(*id);
  }

  absl::Status PushText(Kind kind, uint64_t n) {
    if (auto st = Need(n); !st.ok()) return st;
    auto id = New(kind);
    if (!id.ok()) return id.status();
    g_.nodes[*id].s.assign(reinterpret_cast<const char*>(d_.data() + pos_), n);
    pos_ += n;
    return Push(*id);
  }

  absl::StatusOr<NodeId> Pop() {
    if (Available() == 0) return Err("stack underflow");
    NodeId id = stack_.back();
    stack_.pop_back();
    return id;
  }

  absl::StatusOr<NodeId> Top() const {
    if (Available() == 0) return Err("stack underflow");
    return stack_.back();
  }

  // Pops everything above the innermost mark, and the mark.
  absl::StatusOr<std::vector<NodeId>> PopMark() {
    if (marks_.empty()) return Err("no MARK on the stack");
    const size_t base = marks_.back();
    marks_.pop_back();
    std::vector<NodeId> items(stack_.begin() + static_cast<ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return items;
  }

  absl::Status PushSequence(Kind kind, std::vector<NodeId> items) {
    auto id = New(kind);
    if (!id.ok()) return id.status();
    g_.nodes[*id].items = std::move(items);
    return Push(*id);
  }

  absl::Status Tuple(size_t n) {
    if (Available() < n) return Err("stack underflow");
    std::vector<NodeId> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return PushSequence(Kind::kTuple, std::move(items));
  }

  absl::Status Memo(uint64_t key, NodeId value) {
    if (memo_.size() >= lim_.max_nodes && !memo_.contains(static_cast<uint32_t>(key))) {
      return Err("memo too large");
    }
    if (key > UINT32_MAX) return Err("memo key out of range");
    memo_[static_cast<uint32_t>(key)] = value;
    return absl::OkStatus();
  }

  absl::Status Get(uint64_t key) {
    auto it = memo_.find(static_cast<uint32_t>(key));
    if (it == memo_.end()) return Err(absl::StrCat("memo key ", key, " was never stored"));
    return Push(it->second);
  }

  absl::Status PushGlobal(std::string module, std::string name) {
    auto id = New(Kind::kGlobal);
    if (!id.ok()) return id.status();
    g_.nodes[*id].s = absl::StrCat(module, ".", name);
    return Push(*id);
  }

  absl::StatusOr<std::string> ReadLine() {
    const uint8_t* start = d_.data() + pos_;
    const void* nl = std::memchr(start, '\n', d_.size() - pos_);
    if (nl == nullptr) return Err("unterminated GLOBAL name");
    const size_t n = static_cast<const uint8_t*>(nl) - start;
    pos_ += n + 1;
    return std::string(reinterpret_cast<const char*>(start), n);
  }

  // Little-endian two's complement, as LONG1/LONG4 store it.
  absl::Status PushLong(uint64_t n) {
    if (auto st = Need(n); !st.ok()) return st;
    if (n > 8) return Err(absl::StrCat(n, "-byte integer does not fit in 64 bits"));
    uint64_t v = 0;
    for (uint64_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(d_[pos_ + k]) << (8 * k);
    if (n > 0 && n < 8 && (d_[pos_ + n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);
    pos_ += n;
    return PushNew(Kind::kInt, static_cast<int64_t>(v));
  }

  absl::Status Reduce() {
    auto args = Pop();
    if (!args.ok()) return args.status();
    auto callable = Pop();
    if (!callable.ok()) return callable.status();
    if (g_.at(*args).kind != Kind::kTuple) {
      return Err(absl::StrCat("arguments are a ", KindName(g_.at(*args).kind), ", not a tuple"));
    }
    const Value& c = g_.at(*callable);
    // OrderedDict() is the one constructor we run: SETITEMS then fills it.
    if (c.kind == Kind::kGlobal && c.s == "collections.OrderedDict" && g_.at(*args).items.empty()) {
      return PushNew(Kind::kDict);
    }
    std::string name = c.kind == Kind::kGlobal ? c.s : std::string();
    auto id = New(Kind::kObject);
    if (!id.ok()) return id.status();
    g_.nodes[*id].s = std::move(name);
    g_.nodes[*id].items = {*callable, *args};
    return Push(*id);
  }

  // Adds key/value pairs to the dict below them; items of opaque objects are dropped.
  absl::Status SetItems(const std::vector<NodeId>& kv) {
    if (kv.size() % 2 != 0) return Err("odd number of items for SETITEMS");
    auto target = Top();
    if (!target.ok()) return target.status();
    Value& t = g_.nodes[*target];
    if (t.kind == Kind::kObject) return absl::OkStatus();
    if (t.kind != Kind::kDict) return Err(absl::StrCat("SETITEM on a ", KindName(t.kind)));
    t.items.insert(t.items.end(), kv.begin(), kv.end());
    return absl::OkStatus();
  }

  absl::Status Appends(const std::vector<NodeId>& items) {
    auto target = Top();
    if (!target.ok()) return target.status();
    Value& t = g_.nodes[*target];
    if (t.kind == Kind::kObject) return absl::OkStatus();
    if (t.kind != Kind::kList) return Err(absl::StrCat("APPEND on a ", KindName(t.kind)));
    t.items.insert(t.items.end(), items.begin(), items.end());
    return absl::OkStatus();
  }

  absl::Status Step();

  absl::Span<const uint8_t> d_;
  const Limits lim_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  Graph g_;
  std::vector<NodeId> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint32_t, NodeId> memo_;
};

absl::Status Machine::Step() {
  switch (op_) {
    case kProto:
      if (auto st = Need(1); !st.ok()) return st;
      if (d_[pos_] > 5) return Err(absl::StrCat("unknown pickle protocol ", d_[pos_]));
      ++pos_;
      return absl::OkStatus();
    case kFrame:  // a length hint for buffered readers; the data is already all here
      if (auto st = Need(8); !st.ok()) return st;
      pos_ += 8;
      return absl::OkStatus();
    case kMark:
      if (marks_.size() >= lim_.max_marks) return Err("too many nested MARKs");
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case kPop:
      return Pop().status();
    case kPopMark:
      return PopMark().status();
    case kDup: {
      auto top = Top();
      if (!top.ok()) return top.status();
      return Push(*top);
    }
    case kNoneOp:
      return PushNew(Kind::kNone);
    case kNewTrue:
      return PushNew(Kind::kBool, 1);
    case kNewFalse:
      return PushNew(Kind::kBool, 0);
    case kBinInt1:
      if (auto st = Need(1); !st.ok()) return st;
      return PushNew(Kind::kInt, d_[pos_++]);
    case kBinInt2:
      if (auto st = Need(2); !st.ok()) return st;
      pos_ += 2;
      return PushNew(Kind::kInt, le::Load16(d_.data() + pos_ - 2));
    case kBinInt:
      if (auto st = Need(4); !st.ok()) return st;
      pos_ += 4;
      return PushNew(Kind::kInt, static_cast<int32_t>(le::Load32(d_.data() + pos_ - 4)));
    case kLong1:
      if (auto st = Need(1); !st.ok()) return st;
      return PushLong(d_[pos_++]);
    case kLong4:
      if (auto st = Need(4); !st.ok()) return st;
      pos_ += 4;
      return PushLong(le::Load32(d_.data() + pos_ - 4));
    case kBinFloat: {
      if (auto st = Need(8); !st.ok()) return st;
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | d_[pos_ + k];  // big-endian
      pos_ += 8;
      double f;
      std::memcpy(&f, &bits, 8);
      auto id = New(Kind::kFloat);
      if (!id.ok()) return id.status();
      g_.nodes[*id].f = f;
      return Push(*id);
    }
    case kShortBinUnicode:
      if (auto st = Need(1); !st.ok()) return st;
      return PushText(Kind::kString, d_[pos_++]);
    case kBinUnicode:
      if (auto st = Need(4); !st.ok()) return st;
      pos_ += 4;
      return PushText(Kind::kString, le::Load32(d_.data() + pos_ - 4));
    case kBinUnicode8:
      if (auto st = Need(8); !st.ok()) return st;
      pos_ += 8;
      return PushText(Kind::kString, le::Load64(d_.data() + pos_ - 8));
    case kShortBinBytes:
      if (auto st = Need(1); !st.ok()) return st;
      return PushText(Kind::kBytes, d_[pos_++]);
    case kBinBytes:
      if (auto st = Need(4); !st.ok()) return st;
      pos_ += 4;
      return PushText(Kind::kBytes, le::Load32(d_.data() + pos_ - 4));
    case kBinBytes8:
      if (auto st = Need(8); !st.ok()) return st;
      pos_ += 8;
      return PushText(Kind::kBytes, le::Load64(d_.data() + pos_ - 8));
    case kEmptyTuple:
      return PushNew(Kind::kTuple);
    case kEmptyList:
      return PushNew(Kind::kList);
    case kEmptyDict:
      return PushNew(Kind::kDict);
    case kTuple1:
      return Tuple(1);
    case kTuple2:
      return Tuple(2);
    case kTuple3:
      return Tuple(3);
    case kTupleOp:
    case kListOp:
    case kDictOp: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      if (op_ == kTupleOp) return PushSequence(Kind::kTuple, std::move(*items));
      if (op_ == kListOp) return PushSequence(Kind::kList, std::move(*items));
      if (items->size() % 2 != 0) return Err("odd number of items for DICT");
      return PushSequence(Kind::kDict, std::move(*items));
    }
    case kGlobalOp: {
      auto module = ReadLine();
      if (!module.ok()) return module.status();
      auto name = ReadLine();
      if (!name.ok()) return name.status();
      return PushGlobal(std::move(*module), std::move(*name));
    }
    case kStackGlobal: {
      auto name = Pop();
      if (!name.ok()) return name.status();
      auto module = Pop();
      if (!module.ok()) return module.status();
      if (g_.at(*name).kind != Kind::kString || g_.at(*module).kind != Kind::kString) {
        return Err("STACK_GLOBAL needs two strings");
      }
      return PushGlobal(g_.at(*module).s, g_.at(*name).s);
    }
    case kReduce:
    case kNewObj:
      return Reduce();
    case kBuild: {  // state is dropped: it carries no tensors in a state dict (e.g. _metadata)
      auto state = Pop();
      if (!state.ok()) return state.status();
      return Top().status();
    }
    case kBinPersId: {
      auto pid = Pop();
      if (!pid.ok()) return pid.status();
      auto id = New(Kind::kPersistentId);
      if (!id.ok()) return id.status();
      g_.nodes[*id].items = {*pid};
      return Push(*id);
    }
    case kSetItem: {
      auto value = Pop();
      if (!value.ok()) return value.status();
      auto key = Pop();
      if (!key.ok()) return key.status();
      return SetItems({*key, *value});
    }
    case kSetItems: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      return SetItems(*items);
    }
    case kAppend: {
      auto value = Pop();
      if (!value.ok()) return value.status();
      return Appends({*value});
    }
    case kAppends: {
      auto items = PopMark();
      if (!items.ok()) return items.status();
      return Appends(*items);
    }
    case kBinPut: {
      if (auto st = Need(1); !st.ok()) return st;
      auto top = Top();
      if (!top.ok()) return top.status();
      return Memo(d_[pos_++], *top);
    }
    case kLongBinPut: {
      if (auto st = Need(4); !st.ok()) return st;
      auto top = Top();
      if (!top.ok()) return top.status();
      pos_ += 4;
      return Memo(le::Load32(d_.data() + pos_ - 4), *top);
    }
    case kMemoize: {
      auto top = Top();
      if (!top.ok()) return top.status();
      return Memo(memo_.size(), *top);
    }
    case kBinGet:
      if (auto st = Need(1); !st.ok()) return st;
      return Get(d_[pos_++]);
    case kLongBinGet:
      if (auto st = Need(4); !st.ok()) return st;
      pos_ += 4;
      return Get(le::Load32(d_.data() + pos_ - 4));
    default:
      return Err("unsupported opcode (not used by torch.save state dicts)");
  }
}

}  // namespace

absl::StatusOr<Graph> Unpickle(absl::Span<const uint8_t> data, const Limits& limits) {
  return Machine(data, limits).Run();
}

}  // namespace modrwkv::pickle

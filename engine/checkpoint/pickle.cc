// Bounded pickle virtual machine (see pickle.h). Mirrors CPython's Unpickler for the opcodes it
// accepts, including its mark semantics: after MARK only the items pushed since are poppable.
#include "engine/checkpoint/pickle.h"

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

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

using GlobalSet = absl::flat_hash_set<std::pair<std::string, std::string>>;

GlobalSet MakeAllowedGlobals() {
  GlobalSet s = {
      {"collections", "OrderedDict"},
      {"collections", "Counter"},
      {"torch.nn.parameter", "Parameter"},
      {"torch.serialization", "_get_layout"},
      {"torch", "Size"},
      {"torch", "Tensor"},
      {"torch", "device"},
      {"_codecs", "encode"},  // bytes, in protocol 2
      {"torch._tensor", "_rebuild_from_type_v2"},
      {"torch.storage", "UntypedStorage"},
      {"torch.storage", "TypedStorage"},
      {"torch", "UntypedStorage"},
      {"torch", "TypedStorage"},
  };
  for (const char* module : {"builtins", "__builtin__"}) {
    for (const char* name : {"bytearray", "set", "complex"}) {
      s.insert({module, name});
    }
  }
  for (const char* f :
       {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"}) {
    s.insert({"torch._utils", f});
  }
  // dtypes as str(dtype) prints them, plus the aliases DTypeFromGlobal reads.
  for (const char* d : {"float64",
                        "float32",
                        "float16",
                        "bfloat16",
                        "int64",
                        "int32",
                        "int16",
                        "int8",
                        "uint8",
                        "bool",
                        "complex128",
                        "complex64",
                        "complex32",
                        "quint8",
                        "qint8",
                        "qint32",
                        "quint4x2",
                        "quint2x4",
                        "float8_e5m2",
                        "float8_e4m3fn",
                        "float8_e5m2fnuz",
                        "float8_e4m3fnuz",
                        "float8_e8m0fnu",
                        "float4_e2m1fn_x2",
                        "bits8",
                        "bits16",
                        "bits1x8",
                        "bits2x4",
                        "bits4x2",
                        "uint16",
                        "uint32",
                        "uint64",
                        "uint1",
                        "uint2",
                        "uint3",
                        "uint4",
                        "uint5",
                        "uint6",
                        "uint7",
                        "int1",
                        "int2",
                        "int3",
                        "int4",
                        "int5",
                        "int6",
                        "int7",
                        "half",
                        "float",
                        "per_tensor_affine",
                        "per_tensor_symmetric",
                        "per_channel_affine",
                        "per_channel_symmetric",
                        "per_channel_affine_float_qparams"}) {
    s.insert({"torch", d});
  }
  for (const char* t : {"Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                        "Byte", "Bool", "ComplexDouble", "ComplexFloat"}) {
    s.insert({"torch", absl::StrCat(t, "Storage")});
    for (const char* module : {"torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"}) {
      s.insert({module, absl::StrCat(t, "Tensor")});
    }
  }
  for (const char* t : {"QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4"}) {
    s.insert({"torch", absl::StrCat(t, "Storage")});
  }
  return s;
}

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
        if (Available() == 0) {
          return Err("STOP with an empty stack");
        }
        g_.root = stack_.back();
        return std::move(g_);
      }
      MODRWKV_RETURN_IF_ERROR(Step());
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

  // Reads an unsigned little-endian integer of `width` bytes (1, 2, 4 or 8).
  absl::StatusOr<uint64_t> Read(int width) {
    MODRWKV_RETURN_IF_ERROR(Need(width));
    uint64_t v = 0;
    for (int k = 0; k < width; ++k) {
      v |= static_cast<uint64_t>(d_[pos_ + k]) << (8 * k);
    }
    pos_ += width;
    return v;
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

  absl::Status PushNew(Kind kind, int64_t i = 0, double f = 0) {
    MODRWKV_ASSIGN_OR_RETURN(NodeId id, New(kind));
    g_.nodes[id].i = i;
    g_.nodes[id].f = f;
    return Push(id);
  }

  // A string or bytes value whose length is given by a `width`-byte prefix.
  absl::Status PushText(Kind kind, int width) {
    MODRWKV_ASSIGN_OR_RETURN(uint64_t n, Read(width));
    MODRWKV_RETURN_IF_ERROR(Need(n));
    MODRWKV_ASSIGN_OR_RETURN(NodeId id, New(kind));
    g_.nodes[id].s.assign(reinterpret_cast<const char*>(d_.data() + pos_), n);
    pos_ += n;
    return Push(id);
  }

  absl::StatusOr<NodeId> Pop() {
    if (Available() == 0) {
      return Err("stack underflow");
    }
    NodeId id = stack_.back();
    stack_.pop_back();
    return id;
  }

  absl::StatusOr<NodeId> Top() const {
    if (Available() == 0) {
      return Err("stack underflow");
    }
    return stack_.back();
  }

  // Pops everything above the innermost mark, and the mark.
  absl::StatusOr<std::vector<NodeId>> PopMark() {
    if (marks_.empty()) {
      return Err("no MARK on the stack");
    }
    const size_t base = marks_.back();
    marks_.pop_back();
    std::vector<NodeId> items(stack_.begin() + static_cast<ptrdiff_t>(base), stack_.end());
    stack_.resize(base);
    return items;
  }

  absl::Status PushSequence(Kind kind, std::vector<NodeId> items) {
    MODRWKV_ASSIGN_OR_RETURN(NodeId id, New(kind));
    g_.nodes[id].items = std::move(items);
    return Push(id);
  }

  absl::Status Tuple(size_t n) {
    if (Available() < n) {
      return Err("stack underflow");
    }
    std::vector<NodeId> items(stack_.end() - static_cast<ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return PushSequence(Kind::kTuple, std::move(items));
  }

  absl::Status Memo(uint64_t key) {
    MODRWKV_ASSIGN_OR_RETURN(NodeId top, Top());
    if (memo_.size() >= lim_.max_nodes && !memo_.contains(static_cast<uint32_t>(key))) {
      return Err("memo too large");
    }
    if (key > UINT32_MAX) {
      return Err("memo key out of range");
    }
    memo_[static_cast<uint32_t>(key)] = top;
    return absl::OkStatus();
  }

  absl::Status Get(uint64_t key) {
    auto it = memo_.find(static_cast<uint32_t>(key));
    if (it == memo_.end()) {
      return Err(absl::StrCat("memo key ", key, " was never stored"));
    }
    return Push(it->second);
  }

  // The arguments may alias strings of existing nodes: join them before New() can reallocate.
  absl::Status PushGlobal(const std::string& module, const std::string& name) {
    if (!IsAllowedGlobal(module, name)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pickle opcode 0x%02x at byte %d: global %s.%s (module \"%s\", name \"%s\") is not "
          "allowed in a state dict (torch.load(weights_only=True) refuses it too)",
          op_, op_pos_, absl::CHexEscape(module), absl::CHexEscape(name), absl::CHexEscape(module),
          absl::CHexEscape(name)));
    }
    std::string full = absl::StrCat(module, ".", name);
    MODRWKV_ASSIGN_OR_RETURN(NodeId id, New(Kind::kGlobal));
    g_.nodes[id].s = std::move(full);
    return Push(id);
  }

  absl::StatusOr<std::string> ReadLine() {
    const uint8_t* start = d_.data() + pos_;
    const void* nl = std::memchr(start, '\n', d_.size() - pos_);
    if (nl == nullptr) {
      return Err("unterminated GLOBAL name");
    }
    const size_t n = static_cast<const uint8_t*>(nl) - start;
    pos_ += n + 1;
    return std::string(reinterpret_cast<const char*>(start), n);
  }

  // Little-endian two's complement, as LONG1/LONG4 store it; `width` is the length prefix's.
  absl::Status PushLong(int width) {
    MODRWKV_ASSIGN_OR_RETURN(uint64_t n, Read(width));
    MODRWKV_RETURN_IF_ERROR(Need(n));
    if (n > 8) {
      return Err(absl::StrCat(n, "-byte integer does not fit in 64 bits"));
    }
    const bool negative = n > 0 && (d_[pos_ + n - 1] & 0x80);
    MODRWKV_ASSIGN_OR_RETURN(uint64_t v, Read(static_cast<int>(n)));
    if (negative && n < 8) {
      v |= ~uint64_t{0} << (8 * n);
    }
    return PushNew(Kind::kInt, static_cast<int64_t>(v));
  }

  absl::Status Reduce() {
    MODRWKV_ASSIGN_OR_RETURN(NodeId args, Pop());
    MODRWKV_ASSIGN_OR_RETURN(NodeId callable, Pop());
    if (g_.at(args).kind != Kind::kTuple) {
      return Err(absl::StrCat("arguments are a ", KindName(g_.at(args).kind), ", not a tuple"));
    }
    const Value& c = g_.at(callable);
    // OrderedDict() is the one constructor we run: SETITEMS then fills it.
    if (c.kind == Kind::kGlobal && c.s == "collections.OrderedDict" && g_.at(args).items.empty()) {
      return PushNew(Kind::kDict);
    }
    std::string name = c.kind == Kind::kGlobal ? c.s : std::string();
    MODRWKV_ASSIGN_OR_RETURN(NodeId id, New(Kind::kObject));
    g_.nodes[id].s = std::move(name);
    g_.nodes[id].items = {callable, args};
    return Push(id);
  }

  // Adds key/value pairs to the dict below them; items of opaque objects are dropped.
  absl::Status SetItems(const std::vector<NodeId>& kv) {
    if (kv.size() % 2 != 0) {
      return Err("odd number of items for SETITEMS");
    }
    MODRWKV_ASSIGN_OR_RETURN(NodeId target, Top());
    Value& t = g_.nodes[target];
    if (t.kind == Kind::kObject) {
      return absl::OkStatus();
    }
    if (t.kind != Kind::kDict) {
      return Err(absl::StrCat("SETITEM on a ", KindName(t.kind)));
    }
    t.items.insert(t.items.end(), kv.begin(), kv.end());
    return absl::OkStatus();
  }

  absl::Status Appends(const std::vector<NodeId>& items) {
    MODRWKV_ASSIGN_OR_RETURN(NodeId target, Top());
    Value& t = g_.nodes[target];
    if (t.kind == Kind::kObject) {
      return absl::OkStatus();
    }
    if (t.kind != Kind::kList) {
      return Err(absl::StrCat("APPEND on a ", KindName(t.kind)));
    }
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
    case kProto: {
      MODRWKV_ASSIGN_OR_RETURN(uint64_t protocol, Read(1));
      if (protocol > 5) {
        return Err(absl::StrCat("unknown pickle protocol ", protocol));
      }
      return absl::OkStatus();
    }
    case kFrame:  // a length hint for buffered readers; the data is already all here
      return Read(8).status();
    case kMark:
      if (marks_.size() >= lim_.max_marks) {
        return Err("too many nested MARKs");
      }
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case kPop:
      return Pop().status();
    case kPopMark:
      return PopMark().status();
    case kDup: {
      MODRWKV_ASSIGN_OR_RETURN(NodeId top, Top());
      return Push(top);
    }
    case kNoneOp:
      return PushNew(Kind::kNone);
    case kNewTrue:
      return PushNew(Kind::kBool, 1);
    case kNewFalse:
      return PushNew(Kind::kBool, 0);
    case kBinInt1:
    case kBinInt2: {
      MODRWKV_ASSIGN_OR_RETURN(uint64_t v, Read(op_ == kBinInt1 ? 1 : 2));
      return PushNew(Kind::kInt, static_cast<int64_t>(v));
    }
    case kBinInt: {
      MODRWKV_ASSIGN_OR_RETURN(uint64_t v, Read(4));
      return PushNew(Kind::kInt, static_cast<int32_t>(static_cast<uint32_t>(v)));
    }
    case kLong1:
      return PushLong(1);
    case kLong4:
      return PushLong(4);
    case kBinFloat: {
      MODRWKV_RETURN_IF_ERROR(Need(8));
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) {
        bits = (bits << 8) | d_[pos_ + k];  // big-endian
      }
      pos_ += 8;
      double f;
      std::memcpy(&f, &bits, 8);
      return PushNew(Kind::kFloat, 0, f);
    }
    case kShortBinUnicode:
      return PushText(Kind::kString, 1);
    case kBinUnicode:
      return PushText(Kind::kString, 4);
    case kBinUnicode8:
      return PushText(Kind::kString, 8);
    case kShortBinBytes:
      return PushText(Kind::kBytes, 1);
    case kBinBytes:
      return PushText(Kind::kBytes, 4);
    case kBinBytes8:
      return PushText(Kind::kBytes, 8);
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
      MODRWKV_ASSIGN_OR_RETURN(std::vector<NodeId> items, PopMark());
      if (op_ == kTupleOp) {
        return PushSequence(Kind::kTuple, std::move(items));
      }
      if (op_ == kListOp) {
        return PushSequence(Kind::kList, std::move(items));
      }
      if (items.size() % 2 != 0) {
        return Err("odd number of items for DICT");
      }
      return PushSequence(Kind::kDict, std::move(items));
    }
    case kGlobalOp: {
      MODRWKV_ASSIGN_OR_RETURN(std::string module, ReadLine());
      MODRWKV_ASSIGN_OR_RETURN(std::string name, ReadLine());
      return PushGlobal(module, name);
    }
    case kStackGlobal: {
      MODRWKV_ASSIGN_OR_RETURN(NodeId name, Pop());
      MODRWKV_ASSIGN_OR_RETURN(NodeId module, Pop());
      if (g_.at(name).kind != Kind::kString || g_.at(module).kind != Kind::kString) {
        return Err("STACK_GLOBAL needs two strings");
      }
      return PushGlobal(g_.at(module).s, g_.at(name).s);
    }
    case kReduce:
    case kNewObj:
      return Reduce();
    case kBuild:  // state is dropped: it carries no tensors in a state dict (e.g. _metadata)
      MODRWKV_RETURN_IF_ERROR(Pop().status());
      return Top().status();
    case kBinPersId: {
      MODRWKV_ASSIGN_OR_RETURN(NodeId pid, Pop());
      return PushSequence(Kind::kPersistentId, {pid});
    }
    case kSetItem: {
      MODRWKV_ASSIGN_OR_RETURN(NodeId value, Pop());
      MODRWKV_ASSIGN_OR_RETURN(NodeId key, Pop());
      return SetItems({key, value});
    }
    case kSetItems: {
      MODRWKV_ASSIGN_OR_RETURN(std::vector<NodeId> items, PopMark());
      return SetItems(items);
    }
    case kAppend: {
      MODRWKV_ASSIGN_OR_RETURN(NodeId value, Pop());
      return Appends({value});
    }
    case kAppends: {
      MODRWKV_ASSIGN_OR_RETURN(std::vector<NodeId> items, PopMark());
      return Appends(items);
    }
    case kBinPut:
    case kLongBinPut: {
      MODRWKV_ASSIGN_OR_RETURN(uint64_t key, Read(op_ == kBinPut ? 1 : 4));
      return Memo(key);
    }
    case kMemoize:
      return Memo(memo_.size());
    case kBinGet:
    case kLongBinGet: {
      MODRWKV_ASSIGN_OR_RETURN(uint64_t key, Read(op_ == kBinGet ? 1 : 4));
      return Get(key);
    }
    default:
      return Err("unsupported opcode (not used by torch.save state dicts)");
  }
}

}  // namespace

bool IsAllowedGlobal(absl::string_view module, absl::string_view name) {
  static const GlobalSet* const allowed = new GlobalSet(MakeAllowedGlobals());
  return allowed->contains(std::make_pair(std::string(module), std::string(name)));
}

absl::StatusOr<Graph> Unpickle(absl::Span<const uint8_t> data, const Limits& limits) {
  return Machine(data, limits).Run();
}

}  // namespace modrwkv::pickle

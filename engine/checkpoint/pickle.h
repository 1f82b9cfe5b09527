// A small, bounded unpickler for the data.pkl of torch.save archives (pickle protocol 2, plus the
// protocol 3/4 opcodes Python may emit). It executes nothing: globals, REDUCE and BUILD become
// inert nodes of a value graph that the torch reader interprets. Malformed input is a Status, and
// so is any global outside the state-dict allow-list (IsAllowedGlobal).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace modrwkv::pickle {

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,  // str (UTF-8 bytes, not validated)
  kBytes,
  kTuple,         // items
  kList,          // items
  kDict,          // items = key0, value0, key1, value1, ... in insertion order; a later
                  // duplicate key overrides an earlier one
  kGlobal,        // s = "module.name"
  kObject,        // result of REDUCE/NEWOBJ: items = {callable, args}; s = callable's name when
                  // the callable is a global, else ""
  kPersistentId,  // BINPERSID: items = {pid}
};

absl::string_view KindName(Kind k);

using NodeId = uint32_t;

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;  // kBool (0/1), kInt
  double f = 0;   // kFloat
  std::string s;  // kString, kBytes, kGlobal, kObject
  std::vector<NodeId> items;
};

// The unpickled value graph. Nodes only refer to nodes created before them, except that lists
// and dicts can be mutated to contain themselves; consumers must bound their recursion.
struct Graph {
  std::vector<Value> nodes;
  NodeId root = 0;

  const Value& at(NodeId id) const { return nodes[id]; }
};

struct Limits {
  size_t max_nodes = size_t{4} << 20;  // ~20 nodes per tensor: room for 200k tensors
  size_t max_stack = size_t{4} << 20;
  size_t max_marks = 4096;
};

// The globals a state dict may name: those torch.load(weights_only=True) allows by default
// (torch/_weights_only_unpickler.py: OrderedDict, the torch._utils._rebuild_* functions, storage,
// tensor and dtype types, torch.Size, torch.device, nn.Parameter, ...), with protocol 2's
// "__builtin__" spelling of "builtins".
bool IsAllowedGlobal(absl::string_view module, absl::string_view name);

// Runs `data` up to STOP. Errors name the opcode and its byte offset: DATA_LOSS for a malformed
// stream, INVALID_ARGUMENT (naming the module and the name) for a GLOBAL or STACK_GLOBAL outside
// IsAllowedGlobal, wherever it appears, whether or not the value is used.
absl::StatusOr<Graph> Unpickle(absl::Span<const uint8_t> data, const Limits& limits = {});

}  // namespace modrwkv::pickle

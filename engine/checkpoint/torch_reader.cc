// Interprets torch.save's pickle object model: OrderedDict / dict of tensors built by
// torch._utils._rebuild_tensor{,_v2,_v3} (optionally wrapped by _rebuild_parameter) over storages
// given as persistent ids ('storage', torch.XStorage, key, location, numel).
#include "engine/checkpoint/torch_reader.h"

#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint/pickle.h"
#include "engine/checkpoint/zip_reader.h"

namespace modrwkv {
namespace {

using pickle::Graph;
using pickle::Kind;
using pickle::NodeId;
using pickle::Value;

constexpr int kMaxDims = 32;
constexpr int kMaxWrapDepth = 4;  // _rebuild_parameter(_rebuild_from_type_v2(...)) and the like
constexpr uint64_t kMaxCount = uint64_t{1} << 60;  // elements or bytes; keeps products exact

struct StorageType {
  absl::string_view name;        // pickled global
  absl::string_view dtype_name;  // as torch prints it
  uint64_t element_size;
  std::optional<DType> dtype;  // nullopt: not a dtype we serve (or untyped bytes)
};

constexpr StorageType kStorageTypes[] = {
    {"torch.BFloat16Storage", "bfloat16", 2, DType::kBF16},
    {"torch.HalfStorage", "float16", 2, DType::kF16},
    {"torch.FloatStorage", "float32", 4, DType::kF32},
    {"torch.DoubleStorage", "float64", 8, std::nullopt},
    {"torch.LongStorage", "int64", 8, std::nullopt},
    {"torch.IntStorage", "int32", 4, std::nullopt},
    {"torch.ShortStorage", "int16", 2, std::nullopt},
    {"torch.CharStorage", "int8", 1, std::nullopt},
    {"torch.ByteStorage", "uint8", 1, std::nullopt},
    {"torch.BoolStorage", "bool", 1, std::nullopt},
    {"torch.ComplexFloatStorage", "complex64", 8, std::nullopt},
    {"torch.ComplexDoubleStorage", "complex128", 16, std::nullopt},
    // Untyped byte storages: torch >= 2 pickles these for _rebuild_tensor_v3, which names the
    // dtype separately.
    {"torch.UntypedStorage", "untyped", 1, std::nullopt},
    {"torch.storage.UntypedStorage", "untyped", 1, std::nullopt},
};

const StorageType* FindStorageType(absl::string_view name) {
  for (const auto& t : kStorageTypes) {
    if (t.name == name) {
      return &t;
    }
  }
  return nullptr;
}

// dtype globals of _rebuild_tensor_v3 (torch.bfloat16, ...).
std::optional<DType> DTypeFromGlobal(absl::string_view name) {
  if (name == "torch.bfloat16") {
    return DType::kBF16;
  }
  if (name == "torch.float16" || name == "torch.half") {
    return DType::kF16;
  }
  if (name == "torch.float32" || name == "torch.float") {
    return DType::kF32;
  }
  return std::nullopt;
}

class Resolver {
 public:
  Resolver(const Graph& g, StorageLookup storage) : g_(g), storage_(storage) {}

  // nullopt: the value is not a tensor (skipped by the caller).
  absl::StatusOr<std::optional<TensorView>> Tensor(const std::string& name, NodeId id, int depth) {
    const Value& v = g_.at(id);
    if (v.kind != Kind::kObject) {
      return std::nullopt;
    }
    const std::vector<NodeId>& args = g_.at(v.items[1]).items;
    return Call(name, v.s, args, depth);
  }

 private:
  absl::Status Bad(const std::string& name, absl::string_view what) const {
    return absl::DataLossError(absl::StrCat("tensor ", name, ": ", what));
  }

  absl::StatusOr<std::optional<TensorView>> Call(const std::string& name, const std::string& fn,
                                                 const std::vector<NodeId>& args, int depth) {
    if (fn == "torch._utils._rebuild_tensor" || fn == "torch._utils._rebuild_tensor_v2" ||
        fn == "torch._utils._rebuild_tensor_v3") {
      auto t = Dense(name, fn, args);
      if (!t.ok()) {
        return t.status();
      }
      return std::optional<TensorView>(std::move(*t));
    }
    const bool parameter = fn == "torch._utils._rebuild_parameter" ||
                           fn == "torch._utils._rebuild_parameter_with_state";
    const bool from_type = fn == "torch._tensor._rebuild_from_type_v2";
    if (parameter || from_type) {
      if (depth >= kMaxWrapDepth) {
        return Bad(name, absl::StrCat(fn, " nested too deeply"));
      }
      std::optional<TensorView> inner;
      if (parameter && !args.empty()) {
        auto t = Tensor(name, args[0], depth + 1);
        if (!t.ok()) {
          return t.status();
        }
        inner = std::move(*t);
      } else if (from_type && args.size() >= 3 && g_.at(args[0]).kind == Kind::kGlobal &&
                 g_.at(args[2]).kind == Kind::kTuple) {
        // _rebuild_from_type_v2(func, type, func_args, state): the tensor is func(*func_args).
        auto t = Call(name, g_.at(args[0]).s, g_.at(args[2]).items, depth + 1);
        if (!t.ok()) {
          return t.status();
        }
        inner = std::move(*t);
      }
      if (!inner) {
        return Bad(name, absl::StrCat(fn, " does not wrap a dense tensor"));
      }
      return inner;
    }
    if (absl::StartsWith(fn, "torch._utils._rebuild") ||
        absl::StartsWith(fn, "torch._tensor._rebuild")) {
      return absl::UnimplementedError(absl::StrCat("tensor ", name, " is rebuilt by ", fn,
                                                   "; only dense tensors are supported"));
    }
    return std::nullopt;
  }

  absl::StatusOr<int64_t> Int(const std::string& name, NodeId id, absl::string_view what) const {
    const Value& v = g_.at(id);
    if (v.kind != Kind::kInt) {
      return Bad(name, absl::StrCat(what, " is a ", pickle::KindName(v.kind), ", expected int"));
    }
    if (v.i < 0 || static_cast<uint64_t>(v.i) > kMaxCount) {
      return Bad(name, absl::StrCat(what, " ", v.i, " is out of range"));
    }
    return v.i;
  }

  absl::StatusOr<std::vector<int64_t>> Ints(const std::string& name, NodeId id,
                                            absl::string_view what) const {
    const Value& v = g_.at(id);
    if (v.kind != Kind::kTuple && v.kind != Kind::kList) {
      return Bad(name, absl::StrCat(what, " is a ", pickle::KindName(v.kind), ", expected tuple"));
    }
    if (v.items.size() > kMaxDims) {
      return Bad(name, absl::StrCat(what, " has too many dims"));
    }
    std::vector<int64_t> out;
    for (NodeId item : v.items) {
      auto i = Int(name, item, what);
      if (!i.ok()) {
        return i.status();
      }
      out.push_back(*i);
    }
    return out;
  }

  absl::StatusOr<TensorView> Dense(const std::string& name, const std::string& fn,
                                   const std::vector<NodeId>& args) {
    const bool v3 = fn == "torch._utils._rebuild_tensor_v3";
    if (args.size() < (v3 ? 7u : 4u)) {
      return Bad(name, absl::StrCat(fn, " got ", args.size(), " arguments"));
    }
    // Storage: persistent id ('storage', torch.XStorage, key, location, numel).
    const Value& ps = g_.at(args[0]);
    if (ps.kind != Kind::kPersistentId) {
      return Bad(name, absl::StrCat("storage is a ", pickle::KindName(ps.kind),
                                    ", expected a persistent id"));
    }
    const Value& pid = g_.at(ps.items[0]);
    if (pid.kind != Kind::kTuple || pid.items.size() < 5 ||
        g_.at(pid.items[0]).kind != Kind::kString || g_.at(pid.items[0]).s != "storage" ||
        g_.at(pid.items[1]).kind != Kind::kGlobal || g_.at(pid.items[2]).kind != Kind::kString) {
      return Bad(name, "storage persistent id is not ('storage', type, key, location, numel)");
    }
    const std::string& type_name = g_.at(pid.items[1]).s;
    const std::string& key = g_.at(pid.items[2]).s;
    auto storage_numel = Int(name, pid.items[4], "storage size");
    if (!storage_numel.ok()) {
      return storage_numel.status();
    }
    const StorageType* st = FindStorageType(type_name);
    if (st == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", name, " has unknown storage type ", type_name));
    }

    std::optional<DType> dtype = st->dtype;
    std::string dtype_desc = absl::StrCat(st->dtype_name, " (", type_name, ")");
    if (v3) {
      const Value& d = g_.at(args[6]);
      if (d.kind != Kind::kGlobal) {
        return Bad(name, "dtype argument is not a torch dtype");
      }
      dtype = DTypeFromGlobal(d.s);
      dtype_desc = d.s;
      if (st->dtype_name != "untyped" && st->dtype != dtype) {
        return Bad(name, absl::StrCat("dtype ", d.s, " disagrees with storage ", type_name));
      }
    }
    if (!dtype) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ", dtype_desc,
                                                     "; supported dtypes are bf16, f16 and f32"));
    }
    const uint64_t esize = DTypeSize(*dtype);

    auto offset = Int(name, args[1], "storage offset");
    if (!offset.ok()) {
      return offset.status();
    }
    auto shape = Ints(name, args[2], "size");
    if (!shape.ok()) {
      return shape.status();
    }
    auto stride = Ints(name, args[3], "stride");
    if (!stride.ok()) {
      return stride.status();
    }
    if (stride->size() != shape->size()) {
      return Bad(name,
                 absl::StrCat("size has ", shape->size(), " dims but stride has ", stride->size()));
    }

    uint64_t numel = 1;
    for (int64_t d : *shape) {
      if (d != 0 && numel > kMaxCount / esize / static_cast<uint64_t>(d)) {
        return Bad(name, absl::StrCat("shape ", ShapeToString(*shape), " is too large"));
      }
      numel *= static_cast<uint64_t>(d);
    }
    // Contiguity as torch defines it: strides of size-1 dims do not matter.
    if (numel > 0) {
      uint64_t expected = 1;
      for (size_t k = shape->size(); k-- > 0;) {
        if ((*shape)[k] != 1 && static_cast<uint64_t>((*stride)[k]) != expected) {
          return absl::InvalidArgumentError(
              absl::StrCat("tensor ", name, " has shape ", ShapeToString(*shape), " with strides (",
                           absl::StrJoin(*stride, ","),
                           "); only contiguous row-major tensors are supported "
                           "(save tensor.contiguous())"));
        }
        expected *= static_cast<uint64_t>((*shape)[k]);
      }
    }

    const uint64_t storage_bytes = static_cast<uint64_t>(*storage_numel) * st->element_size;
    const uint64_t begin = static_cast<uint64_t>(*offset) * esize;
    const uint64_t nbytes = numel * esize;
    if (begin + nbytes > storage_bytes) {
      return Bad(name, absl::StrCat("elements [", *offset, ", +", numel, ") of ", dtype_desc,
                                    " exceed its ", storage_bytes, "-byte storage ", key));
    }
    auto bytes = storage_(key);
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          absl::StrCat("tensor ", name, ": ", bytes.status().message()));
    }
    if (bytes->size() < storage_bytes) {
      return Bad(name, absl::StrCat("storage ", key, " holds ", bytes->size(), " bytes, expected ",
                                    storage_bytes));
    }
    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    view.shape = std::move(*shape);
    view.data = bytes->data() + begin;
    view.nbytes = static_cast<size_t>(nbytes);
    return view;
  }

  const Graph& g_;
  StorageLookup storage_;
};

}  // namespace

absl::StatusOr<std::map<std::string, TensorView>> ReadStateDictPickle(
    absl::Span<const uint8_t> data_pkl, StorageLookup storage) {
  auto graph = pickle::Unpickle(data_pkl);
  if (!graph.ok()) {
    return graph.status();
  }
  const Value& root = graph->at(graph->root);
  if (root.kind != Kind::kDict) {
    return absl::InvalidArgumentError(absl::StrCat("data.pkl holds a ", pickle::KindName(root.kind),
                                                   ", expected a dict of tensors"));
  }
  Resolver resolver(*graph, storage);
  std::map<std::string, TensorView> out;
  for (size_t k = 0; k + 1 < root.items.size(); k += 2) {
    const Value& key = graph->at(root.items[k]);
    const std::string name = key.kind == Kind::kString ? key.s : "<non-string key>";
    auto t = resolver.Tensor(name, root.items[k + 1], 0);
    if (!t.ok()) {
      return t.status();
    }
    if (key.kind != Kind::kString) {
      if (*t) {
        return absl::InvalidArgumentError("state dict has a tensor under a non-string key");
      }
      continue;
    }
    if (*t) {
      out.insert_or_assign(name, std::move(**t));
    } else {
      out.erase(name);  // a later non-tensor value replaces an earlier tensor of that name
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, TensorView>> ReadTorchZip(absl::Span<const uint8_t> archive) {
  auto entries = ReadZipDirectory(archive);
  if (!entries.ok()) {
    return entries.status();
  }

  // The archive folder is the saved file's stem or "archive"; torch itself takes it from the
  // first entry. We take it from data.pkl, which must sit directly inside it.
  const ZipEntry* pkl = nullptr;
  bool torchscript = false;
  absl::flat_hash_map<absl::string_view, const ZipEntry*> by_name;
  for (const ZipEntry& e : *entries) {
    by_name.emplace(e.name, &e);
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0) {
      continue;
    }
    const absl::string_view rest = absl::string_view(e.name).substr(slash + 1);
    if (rest == "data.pkl" && pkl == nullptr) {
      pkl = &e;
    }
    if (rest == "constants.pkl") {
      torchscript = true;
    }
  }
  if (pkl == nullptr) {
    return absl::InvalidArgumentError(
        torchscript ? "zip is a TorchScript archive (torch.jit.save), not a torch.save state dict"
                    : "zip has no <archive>/data.pkl entry; not a torch.save checkpoint");
  }
  const std::string prefix =
      pkl->name.substr(0, pkl->name.size() - absl::string_view("data.pkl").size());

  if (auto it = by_name.find(prefix + "byteorder"); it != by_name.end()) {
    auto order = StoredEntryBytes(archive, *it->second);
    if (!order.ok()) {
      return order.status();
    }
    const absl::string_view s(reinterpret_cast<const char*>(order->data()), order->size());
    if (s != "little") {
      return absl::UnimplementedError(absl::StrCat(
          "byteorder is \"", s.substr(0, 16), "\"; only little-endian checkpoints are supported"));
    }
  }

  auto pkl_bytes = StoredEntryBytes(archive, *pkl);
  if (!pkl_bytes.ok()) {
    return pkl_bytes.status();
  }
  auto lookup = [&](const std::string& key) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const std::string entry = absl::StrCat(prefix, "data/", key);
    auto it = by_name.find(entry);
    if (it == by_name.end()) {
      return absl::DataLossError(absl::StrCat("storage entry ", entry, " is missing"));
    }
    return StoredEntryBytes(archive, *it->second);
  };
  return ReadStateDictPickle(*pkl_bytes, lookup);
}

}  // namespace modrwkv

// Tests the bounded unpickler (engine/checkpoint/pickle.cc) and the torch state-dict interpretation
// on top of it (ReadStateDictPickle in engine/checkpoint/torch_reader.cc), on hand-made pickles.
#include "engine/checkpoint/pickle.h"

#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/torch_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using pickle::Kind;
using ::testing::HasSubstr;

// Builds pickle byte strings opcode by opcode.
class P {
 public:
  P& Op(uint8_t op) {
    s_.push_back(static_cast<char>(op));
    return *this;
  }
  P& Raw(const std::string& bytes) {
    s_ += bytes;
    return *this;
  }
  P& U32(uint32_t v) {
    for (int k = 0; k < 4; ++k) s_.push_back(static_cast<char>((v >> (8 * k)) & 0xff));
    return *this;
  }
  P& Proto() { return Op(0x80).Op(2); }
  P& Mark() { return Op('('); }
  P& Int(int v) {
    if (v >= 0 && v < 256) return Op('K').Op(static_cast<uint8_t>(v));
    return Op('J').U32(static_cast<uint32_t>(v));
  }
  P& Str(const std::string& s) { return Op('X').U32(static_cast<uint32_t>(s.size())).Raw(s); }
  P& Global(const std::string& module, const std::string& name) {
    return Op('c').Raw(module + "\n" + name + "\n");
  }
  P& Ints(const std::vector<int>& v) {
    Mark();
    for (int x : v) Int(x);
    return Op('t');
  }
  P& OrderedDict() { return Global("collections", "OrderedDict").Op(')').Op('R'); }
  P& Storage(const std::string& type, const std::string& key, int numel) {
    return Mark()
        .Str("storage")
        .Global("torch", type)
        .Str(key)
        .Str("cpu")
        .Int(numel)
        .Op('t')
        .Op('Q');
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  P& TensorV2(const std::string& type, const std::string& key, int numel, int offset,
              const std::vector<int>& size, const std::vector<int>& stride) {
    Global("torch._utils", "_rebuild_tensor_v2").Mark();
    Storage(type, key, numel).Int(offset).Ints(size).Ints(stride).Op(0x89).OrderedDict();
    return Op('t').Op('R');
  }
  std::string Stop() { return s_ + "."; }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

absl::StatusOr<pickle::Graph> Unpickle(const std::string& s, const pickle::Limits& lim = {}) {
  return pickle::Unpickle(Bytes(s), lim);
}

TEST(PickleTest, ScalarsAndContainers) {
  const std::string s = P().Proto()
                            .Mark()
                            .Int(5)
                            .Op('M')
                            .Raw(std::string("\x2c\x01", 2))  // BININT2 300
                            .Int(-7)
                            .Op(0x8a)
                            .Op(6)
                            .Raw(std::string("\0\0\0\0\0\x01", 6))  // LONG1 2^40
                            .Op(0x8a)
                            .Op(1)
                            .Raw("\xff")  // LONG1 -1
                            .Op('G')
                            .Raw(std::string("\x3f\xf8\0\0\0\0\0\0", 8))  // 1.5
                            .Op('N')
                            .Op(0x88)
                            .Op(0x89)
                            .Str("hi")
                            .Op(0x8c)
                            .Op(2)
                            .Raw("yo")
                            .Op('t')
                            .Stop();
  auto g = Unpickle(s);
  ASSERT_TRUE(g.ok()) << g.status();
  const auto& t = g->at(g->root);
  ASSERT_EQ(t.kind, Kind::kTuple);
  ASSERT_EQ(t.items.size(), 11u);
  EXPECT_EQ(g->at(t.items[0]).i, 5);
  EXPECT_EQ(g->at(t.items[1]).i, 300);
  EXPECT_EQ(g->at(t.items[2]).i, -7);
  EXPECT_EQ(g->at(t.items[3]).i, int64_t{1} << 40);
  EXPECT_EQ(g->at(t.items[4]).i, -1);
  EXPECT_EQ(g->at(t.items[5]).f, 1.5);
  EXPECT_EQ(g->at(t.items[6]).kind, Kind::kNone);
  EXPECT_EQ(g->at(t.items[7]).i, 1);
  EXPECT_EQ(g->at(t.items[8]).i, 0);
  EXPECT_EQ(g->at(t.items[9]).s, "hi");
  EXPECT_EQ(g->at(t.items[10]).s, "yo");
}

TEST(PickleTest, MemoSharesNodes) {
  const std::string s = P().Proto()
                            .Str("a")
                            .Op('q')
                            .Op(1)  // BINPUT 1
                            .Str("b")
                            .Op('r')
                            .U32(70000)  // LONG_BINPUT
                            .Str("c")
                            .Op(0x94)  // MEMOIZE (key 2)
                            .Op('h')
                            .Op(1)
                            .Op('j')
                            .U32(70000)
                            .Op('h')
                            .Op(2)
                            .Op(0x87)  // TUPLE3 of the three gets
                            .Stop();
  // The stack held a, b, c below the tuple: STOP takes the top.
  auto g = Unpickle(s);
  ASSERT_TRUE(g.ok()) << g.status();
  const auto& t = g->at(g->root);
  ASSERT_EQ(t.items.size(), 3u);
  EXPECT_EQ(g->at(t.items[0]).s, "a");
  EXPECT_EQ(g->at(t.items[1]).s, "b");
  EXPECT_EQ(g->at(t.items[2]).s, "c");
  EXPECT_EQ(t.items[0], 0u);  // the very node created for "a"
}

TEST(PickleTest, StackGlobalAndFrame) {
  std::string frame = "\x95";
  frame += std::string(8, '\0');
  const std::string s = P().Op(0x80)
                            .Op(4)
                            .Raw(frame)
                            .Op(0x8c)
                            .Op(11)
                            .Raw("collections")
                            .Op(0x8c)
                            .Op(11)
                            .Raw("OrderedDict")
                            .Op(0x93)
                            .Op(')')
                            .Op('R')
                            .Stop();
  auto g = Unpickle(s);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->at(g->root).kind, Kind::kDict);
}

TEST(PickleTest, MalformedInputIsAnError) {
  struct Case {
    std::string pickle;
    std::string error;
  };
  const Case cases[] = {
      {P().Proto().Int(1).str(), "without STOP"},
      {P().Proto().Op('X').U32(0xffffffff).Raw("ab").Stop(), "needs 4294967295 bytes"},
      {P().Proto().Op(0x8d).Raw(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8)).Stop(),
       "needs 9223372036854775807 bytes"},
      {P().Proto().Op('I').Raw("12\n").Stop(), "opcode 0x49 at byte 2: unsupported opcode"},
      {P().Proto().Op('R').Stop(), "stack underflow"},
      {P().Proto().Op('h').Op(3).Stop(), "memo key 3 was never stored"},
      {P().Proto().Op(']').Str("k").Str("v").Op('s').Stop(), "SETITEM on a list"},
      {P().Proto().Op('}').Int(1).Op('a').Stop(), "APPEND on a dict"},
      {P().Proto().Int(1).Op('t').Stop(), "no MARK"},
      {P().Proto().Int(1).Int(2).Op('R').Stop(), "arguments are a int"},
      {P().Proto().Op('c').Raw("collections").Stop(), "unterminated GLOBAL"},
      {P().Proto().Op(0x8a).Op(9).Raw(std::string(9, '\x01')).Stop(), "does not fit in 64 bits"},
      {P().Op(0x80).Op(9).Stop(), "unknown pickle protocol 9"},
      {P().Proto().Stop(), "STOP with an empty stack"},
      {P().Proto().Int(1).Mark().Op('.').str(), "STOP with an empty stack"},  // mark hides it
  };
  for (const Case& c : cases) {
    auto g = Unpickle(c.pickle);
    EXPECT_THAT(g.status().message(), HasSubstr(c.error)) << c.error;
  }
}

TEST(PickleTest, LimitsBoundMemory) {
  P many;
  many.Proto().Mark();
  for (int i = 0; i < 100; ++i) many.Int(i);
  const std::string s = many.Op('t').Stop();
  pickle::Limits lim;
  lim.max_nodes = 50;
  EXPECT_THAT(Unpickle(s, lim).status().message(), HasSubstr("more than 50 values"));
  lim = {};
  lim.max_stack = 10;
  EXPECT_THAT(Unpickle(s, lim).status().message(), HasSubstr("stack deeper than 10"));
  lim = {};
  lim.max_marks = 3;
  EXPECT_THAT(Unpickle(P().Proto().Mark().Mark().Mark().Mark().Stop(), lim).status().message(),
              HasSubstr("too many nested MARKs"));
}

TEST(PickleTest, SelfReferenceIsHarmless) {
  // l = []; l.append(l)
  const std::string s = P().Proto().Op(']').Op('q').Op(0).Op('h').Op(0).Op('a').Stop();
  auto g = Unpickle(s);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->at(g->root).items[0], g->root);
  auto r = ReadStateDictPickle(Bytes(s), [](const std::string&) {
    return absl::StatusOr<absl::Span<const uint8_t>>(absl::Span<const uint8_t>());
  });
  EXPECT_THAT(r.status().message(), HasSubstr("holds a list, expected a dict"));
}

// A callable outside the state-dict allow-list is refused at parse time wherever it appears, as
// torch.load(weights_only=True) refuses it: nothing here would call it, but a file that names one
// was not written by torch.save(state_dict) and is not loaded as if it were.
TEST(PickleTest, GlobalsOutsideTheAllowListAreRefused) {
  struct Case {
    std::string pickle;
    std::string module, name;
  };
  auto stack_global = [](P& p, const std::string& module, const std::string& name) -> P& {
    return p.Op(0x8c)
        .Op(static_cast<uint8_t>(module.size()))
        .Raw(module)
        .Op(0x8c)
        .Op(static_cast<uint8_t>(name.size()))
        .Raw(name)
        .Op(0x93);
  };
  P in_stack;
  in_stack.Op(0x80).Op(4);
  stack_global(in_stack, "builtins", "eval").Mark().Str("1").Op('t').Op('R');
  const Case cases[] = {
      // In a value nothing reads: an entry of the state dict that is not a tensor.
      {P().Proto()
           .Op('}')
           .Str("unused")
           .Global("os", "system")
           .Mark()
           .Str("true")
           .Op('t')
           .Op('R')
           .Op('s')
           .Stop(),
       "os", "system"},
      // Pushed and popped before the real payload.
      {P().Proto().Global("posix", "system").Op('0').Op('}').Stop(), "posix", "system"},
      {in_stack.Stop(), "builtins", "eval"},
      {P().Proto().Global("torch", "load").Op('0').Op('}').Stop(), "torch", "load"},
      {P().Proto().Global("collections", "defaultdict").Op(')').Op('R').Stop(), "collections",
       "defaultdict"},
      {P().Proto().Global("__builtin__", "getattr").Op('0').Op('}').Stop(), "__builtin__",
       "getattr"},
  };
  for (const Case& c : cases) {
    auto g = Unpickle(c.pickle);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << c.module << "." << c.name;
    EXPECT_THAT(g.status().message(),
                HasSubstr(absl::StrCat("module \"", c.module, "\", name \"", c.name, "\"")));
    EXPECT_THAT(g.status().message(), HasSubstr("not allowed in a state dict"));
    // And through the state-dict reader, which runs the same unpickler.
    auto r = ReadStateDictPickle(Bytes(c.pickle), [](const std::string&) {
      return absl::StatusOr<absl::Span<const uint8_t>>(absl::Span<const uint8_t>());
    });
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.module << "." << c.name;
  }
}

TEST(PickleTest, AllowListHasWhatStateDictsUse) {
  for (const auto& [module, name] : std::vector<std::pair<std::string, std::string>>{
           {"collections", "OrderedDict"},
           {"torch._utils", "_rebuild_tensor_v2"},
           {"torch._utils", "_rebuild_parameter"},
           {"torch._tensor", "_rebuild_from_type_v2"},
           {"torch", "BFloat16Storage"},
           {"torch", "UntypedStorage"},
           {"torch", "bfloat16"},
           {"torch", "device"},
           {"torch", "Size"},
           {"torch.nn.parameter", "Parameter"},
           {"__builtin__", "set"},  // protocol 2 spells builtins so
           {"_codecs", "encode"},
       }) {
    EXPECT_TRUE(pickle::IsAllowedGlobal(module, name)) << module << "." << name;
    auto g = Unpickle(P().Proto().Global(module, name).Stop());
    EXPECT_TRUE(g.ok()) << g.status();
  }
  EXPECT_FALSE(pickle::IsAllowedGlobal("torch", "_utils._rebuild_tensor_v2"));  // no dotted names
  EXPECT_FALSE(pickle::IsAllowedGlobal("torch._utils", "_rebuild_tensor_v2\n"));
  EXPECT_FALSE(pickle::IsAllowedGlobal("os", "system"));
}

// A fake set of storages for ReadStateDictPickle.
class StateDictTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::map<std::string, TensorView>> Read(const std::string& pkl) {
    return ReadStateDictPickle(
        Bytes(pkl), [this](const std::string& key) -> absl::StatusOr<absl::Span<const uint8_t>> {
          auto it = storages_.find(key);
          if (it == storages_.end()) return absl::NotFoundError(absl::StrCat("no storage ", key));
          return absl::Span<const uint8_t>(it->second);
        });
  }
  std::map<std::string, std::vector<uint8_t>> storages_ = {{"0", std::vector<uint8_t>(32, 1)},
                                                           {"1", std::vector<uint8_t>(16, 2)}};
};

TEST_F(StateDictTest, TensorsWithOffsetsWrappersAndSkippedValues) {
  P p;
  p.Proto().OrderedDict().Mark();
  p.Str("a").TensorV2("BFloat16Storage", "0", 16, 4, {2, 3}, {3, 1});
  p.Str("b").Global("torch._utils", "_rebuild_parameter").Mark();
  p.TensorV2("FloatStorage", "1", 4, 0, {1, 4}, {99, 1}).Op(0x88).OrderedDict().Op('t').Op('R');
  p.Str("c").Global("torch._utils", "_rebuild_tensor_v3").Mark();
  p.Mark().Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cpu").Int(32);
  p.Op('t').Op('Q').Int(1).Ints({}).Ints({}).Op(0x89).OrderedDict().Global("torch", "bfloat16");
  p.Op('t').Op('R');
  p.Str("d").Global("torch._tensor", "_rebuild_from_type_v2").Mark();
  p.Global("torch._utils", "_rebuild_tensor_v2").Global("torch", "Tensor").Mark();
  p.Storage("HalfStorage", "1", 8).Int(2).Ints({3}).Ints({1}).Op(0x89).OrderedDict().Op('t');
  p.Op('}').Op('t').Op('R');
  p.Str("epoch").Int(3);
  p.Str("nested").Op('}').Str("x").Int(1).Op('s');
  p.Op('u');
  // BUILD with state, as nn.Module.state_dict() pickles _metadata.
  p.Op('}').Str("_metadata").OrderedDict().Op('s').Op('b');
  auto r = Read(p.Stop());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 4u);
  const TensorView& a = r->at("a");
  EXPECT_EQ(a.dtype, DType::kBF16);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, storages_["0"].data() + 8);
  EXPECT_EQ(a.nbytes, 12u);
  const TensorView& b = r->at("b");
  EXPECT_EQ(b.dtype, DType::kF32);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{1, 4}));  // stride of the size-1 dim is ignored
  EXPECT_EQ(b.data, storages_["1"].data());
  const TensorView& c = r->at("c");
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_TRUE(c.shape.empty());
  EXPECT_EQ(c.data, storages_["0"].data() + 2);  // offset counts bf16 elements, not bytes
  const TensorView& d = r->at("d");
  EXPECT_EQ(d.dtype, DType::kF16);
  EXPECT_EQ(d.data, storages_["1"].data() + 4);
  EXPECT_EQ(d.nbytes, 6u);
}

TEST_F(StateDictTest, LaterDuplicateKeyWins) {
  P p;
  p.Proto().Op('}').Mark();
  p.Str("w").TensorV2("FloatStorage", "0", 8, 0, {2}, {1});
  p.Str("w").TensorV2("FloatStorage", "0", 8, 2, {3}, {1});
  p.Str("gone").TensorV2("FloatStorage", "0", 8, 0, {1}, {1});
  p.Str("gone").Int(0);
  p.Op('u');
  auto r = Read(p.Stop());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at("w").shape, std::vector<int64_t>{3});
}

TEST_F(StateDictTest, TensorErrorsNameTheTensor) {
  struct Case {
    std::string pickle;
    std::string error;
  };
  auto one = [](const std::function<void(P&)>& value) {
    P p;
    p.Proto().Op('}').Str("t");
    value(p);
    return p.Op('s').Stop();
  };
  const Case cases[] = {
      {one([](P& p) { p.TensorV2("FloatStorage", "0", 8, 6, {3}, {1}); }),
       "tensor t: elements [6, +3) of float32 (torch.FloatStorage) exceed its 32-byte storage 0"},
      {one([](P& p) {
         p.TensorV2("FloatStorage", "0", 8, 0, {2, 3}, {1, 2});
       }),
       "tensor t has shape [2,3] with strides (1,2); only contiguous"},
      {one([](P& p) { p.TensorV2("LongStorage", "0", 4, 0, {4}, {1}); }),
       "tensor t has dtype int64 (torch.LongStorage); supported dtypes are bf16, f16 and f32"},
      {one([](P& p) { p.TensorV2("QInt8Storage", "0", 4, 0, {4}, {1}); }),
       "tensor t has unknown storage type torch.QInt8Storage"},
      {one([](P& p) { p.TensorV2("FloatStorage", "7", 1, 0, {1}, {1}); }),
       "tensor t: no storage 7"},
      {one([](P& p) { p.TensorV2("FloatStorage", "1", 8, 0, {8}, {1}); }),
       "tensor t: storage 1 holds 16 bytes, expected 32"},
      {one([](P& p) {
         p.TensorV2("FloatStorage", "0", 8, 0, {2, 2}, {2});
       }),
       "size has 2 dims but stride has 1"},
      {one([](P& p) { p.TensorV2("FloatStorage", "0", 8, 0, {-1}, {1}); }),
       "size -1 is out of range"},
      {one([](P& p) {
         p.Global("torch._utils", "_rebuild_tensor_v2").Mark().Int(0).Int(0).Ints({1}).Ints({1});
         p.Op('t').Op('R');
       }),
       "storage is a int, expected a persistent id"},
      {one([](P& p) {
         p.Global("torch._utils", "_rebuild_tensor_v3").Mark().Storage("FloatStorage", "0", 8);
         p.Int(0).Ints({1}).Ints({1}).Op(0x89).OrderedDict().Global("torch", "float16").Op('t');
         p.Op('R');
       }),
       "dtype torch.float16 disagrees with storage torch.FloatStorage"},
      {one([](P& p) {
         p.Global("torch._utils", "_rebuild_sparse_tensor").Mark().Int(0).Op('t').Op('R');
       }),
       "tensor t is rebuilt by torch._utils._rebuild_sparse_tensor; only dense"},
      {one([](P& p) {
         p.Global("torch._utils", "_rebuild_parameter").Mark().Int(0).Op('t').Op('R');
       }),
       "does not wrap a dense tensor"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(Read(c.pickle).status().message(), HasSubstr(c.error)) << c.error;
  }
  // A tensor under a non-string key.
  P p;
  p.Proto().Op('}').Int(1).TensorV2("FloatStorage", "0", 8, 0, {1}, {1}).Op('s');
  EXPECT_THAT(Read(p.Stop()).status().message(), HasSubstr("non-string key"));
}

}  // namespace
}  // namespace modrwkv

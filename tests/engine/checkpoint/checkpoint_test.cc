// Tests Checkpoint::Open and the writers: round trips in both formats, and that damaged files
// (truncated at every length, flipped bytes, wrong magic) are errors, never crashes.
#include "engine/checkpoint/checkpoint.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/checkpoint/torch_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/ckpt_", ::getpid(), "_", name);
}

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void WriteAll(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

OwnedTensor Random(const std::string& name, DType dtype, std::vector<int64_t> shape,
                   uint32_t seed) {
  OwnedTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  std::mt19937 rng(seed);
  for (auto& b : t.bytes) b = static_cast<uint8_t>(rng());
  return t;
}

std::vector<OwnedTensor> SampleTensors() {
  return {
      Random("emb.weight", DType::kBF16, {16, 8}, 1),
      Random("blocks.0.att.x_r", DType::kBF16, {1, 1, 8}, 2),
      Random("blocks.0.ln1.weight", DType::kF32, {8}, 3),
      Random("blocks.0.att.key.weight", DType::kF16, {8, 8}, 4),
      Random("scalar", DType::kF32, {}, 5),
      Random("empty", DType::kF32, {0, 4}, 6),
      Random("odd.bf16", DType::kBF16, {3}, 7),
      Random("blocks.0.\xc3\xbcnicode", DType::kF32, {2}, 8),
      Random("big.1d", DType::kBF16, {70000}, 9),  // numel needs a 4-byte pickle int
  };
}

void ExpectSameTensors(const Checkpoint& ckpt, const std::vector<OwnedTensor>& want) {
  ASSERT_EQ(ckpt.tensors().size(), want.size());
  for (const OwnedTensor& w : want) {
    const TensorView* t = ckpt.Find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->name, w.name);
    EXPECT_EQ(t->dtype, w.dtype) << w.name;
    EXPECT_EQ(t->shape, w.shape) << w.name;
    ASSERT_EQ(t->nbytes, w.bytes.size()) << w.name;
    if (!w.bytes.empty()) {
      EXPECT_EQ(std::memcmp(t->data, w.bytes.data(), w.bytes.size()), 0) << w.name;
    }
  }
}

TEST(CheckpointTest, TorchRoundTrip) {
  const std::string path = TempPath("rt.pth");
  const auto tensors = SampleTensors();
  ASSERT_TRUE(WriteTorchCheckpoint(path, tensors).ok());
  auto ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->format(), CheckpointFormat::kTorchZip);
  ExpectSameTensors(**ckpt, tensors);
  // Tensor data is 64-byte aligned within the file, like torch.save's.
  for (const auto& [name, t] : (*ckpt)->tensors()) {
    if (t.nbytes > 0) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << name;
    }
  }
}

TEST(CheckpointTest, SafetensorsRoundTrip) {
  const std::string path = TempPath("rt.safetensors");
  const auto tensors = SampleTensors();
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->format(), CheckpointFormat::kSafetensors);
  ExpectSameTensors(**ckpt, tensors);
  const auto bytes = ReadAll(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST(CheckpointTest, TensorsAreSortedByName) {
  const std::string path = TempPath("sorted.pth");
  ASSERT_TRUE(WriteTorchCheckpoint(
                  path, {Random("b", DType::kF32, {1}, 1), Random("a", DType::kF32, {1}, 2)})
                  .ok());
  auto ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_EQ((*ckpt)->tensors().size(), 2u);
  EXPECT_EQ((*ckpt)->tensors().begin()->first, "a");
  EXPECT_EQ((*ckpt)->Find("c"), nullptr);
}

TEST(CheckpointTest, ManyTensorsSpanSeveralSetitemsBatches) {
  std::vector<OwnedTensor> tensors;
  for (int i = 0; i < 2500; ++i) {
    tensors.push_back(Random(absl::StrCat("t", i), DType::kBF16, {2}, i));
  }
  for (const std::string ext : {".pth", ".safetensors"}) {
    const std::string path = TempPath("many" + ext);
    ASSERT_TRUE(
        (ext == ".pth" ? WriteTorchCheckpoint(path, tensors) : WriteSafetensors(path, tensors))
            .ok());
    auto ckpt = Checkpoint::Open(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ExpectSameTensors(**ckpt, tensors);
  }
}

TEST(CheckpointTest, EmptyStateDictRoundTrips) {
  for (const std::string ext : {".pth", ".safetensors"}) {
    const std::string path = TempPath("empty" + ext);
    ASSERT_TRUE((ext == ".pth" ? WriteTorchCheckpoint(path, {}) : WriteSafetensors(path, {})).ok());
    auto ckpt = Checkpoint::Open(path);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_TRUE((*ckpt)->tensors().empty());
  }
}

TEST(CheckpointTest, FormatIsDetectedFromContentNotExtension) {
  const std::string path = TempPath("really_safetensors.pth");
  ASSERT_TRUE(WriteSafetensors(path, {Random("x", DType::kF32, {2}, 1)}).ok());
  auto ckpt = Checkpoint::Open(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->format(), CheckpointFormat::kSafetensors);
}

TEST(CheckpointTest, WritersValidateInputAndLeaveNoFile) {
  OwnedTensor bad = Random("x", DType::kBF16, {2, 3}, 1);
  bad.bytes.pop_back();
  for (const std::string ext : {".pth", ".safetensors"}) {
    const std::string path = TempPath("invalid" + ext);
    auto st = ext == ".pth" ? WriteTorchCheckpoint(path, {bad}) : WriteSafetensors(path, {bad});
    EXPECT_THAT(st.message(), HasSubstr("tensor x bf16[2,3] has 11 bytes, expected 12"));
    EXPECT_THAT(st.message(), HasSubstr(path));
    auto dup = Random("d", DType::kF32, {1}, 2);
    st =
        ext == ".pth" ? WriteTorchCheckpoint(path, {dup, dup}) : WriteSafetensors(path, {dup, dup});
    EXPECT_THAT(st.message(), HasSubstr("duplicate tensor name d"));
    EXPECT_FALSE(std::ifstream(path).good());
  }
  EXPECT_FALSE(
      WriteSafetensors(TempPath("meta.safetensors"), {Random("__metadata__", DType::kF32, {1}, 3)})
          .ok());
}

TEST(CheckpointTest, WriteToMissingDirectoryFails) {
  const std::string path = TempPath("no/such/dir/x.pth");
  auto st = WriteTorchCheckpoint(path, SampleTensors());
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr(path));
}

TEST(CheckpointTest, OpenErrorsNameTheFile) {
  const std::string missing = TempPath("does_not_exist.pth");
  auto r = Checkpoint::Open(missing);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(missing));

  r = Checkpoint::Open(::testing::TempDir());
  EXPECT_THAT(r.status().message(), HasSubstr("not a regular file"));

  const std::string empty = TempPath("empty.bin");
  WriteAll(empty, {});
  r = Checkpoint::Open(empty);
  EXPECT_THAT(r.status().message(), HasSubstr("file is empty"));

  const std::string junk = TempPath("junk.bin");
  WriteAll(junk, std::vector<uint8_t>(64, 'x'));
  r = Checkpoint::Open(junk);
  EXPECT_THAT(r.status().message(), HasSubstr("unrecognized format"));
  EXPECT_THAT(r.status().message(), HasSubstr(junk));

  const std::string legacy = TempPath("legacy.pt");
  WriteAll(legacy, {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50,
                    0x19, 0x2e});
  r = Checkpoint::Open(legacy);
  EXPECT_THAT(r.status().message(), HasSubstr("legacy"));
}

// Copies into an exactly-sized heap buffer so that ASan builds catch any read past the end.
template <typename Reader>
absl::Status ParsePrefix(const std::vector<uint8_t>& file, size_t n, Reader reader) {
  std::vector<uint8_t> buf(file.begin(), file.begin() + static_cast<ptrdiff_t>(n));
  return reader(absl::Span<const uint8_t>(buf.data(), buf.size())).status();
}

TEST(CheckpointTest, EveryTruncationOfATorchFileIsAnError) {
  const std::string path = TempPath("trunc.pth");
  ASSERT_TRUE(WriteTorchCheckpoint(
                  path, {Random("a", DType::kBF16, {2, 3}, 1), Random("b", DType::kF32, {}, 2)})
                  .ok());
  const auto file = ReadAll(path);
  ASSERT_TRUE(ParsePrefix(file, file.size(), ReadTorchZip).ok());
  for (size_t n = 0; n < file.size(); ++n) {
    EXPECT_FALSE(ParsePrefix(file, n, ReadTorchZip).ok()) << "prefix " << n;
  }
  // And through Open, for a sample of cut points.
  for (size_t n : {size_t{1}, size_t{4}, size_t{30}, file.size() / 2, file.size() - 1}) {
    const std::string cut = TempPath("cut.pth");
    WriteAll(cut, std::vector<uint8_t>(file.begin(), file.begin() + static_cast<ptrdiff_t>(n)));
    auto r = Checkpoint::Open(cut);
    EXPECT_FALSE(r.ok()) << n;
    EXPECT_THAT(r.status().message(), HasSubstr(cut));
  }
}

TEST(CheckpointTest, EveryTruncationOfASafetensorsFileIsAnError) {
  const std::string path = TempPath("trunc.safetensors");
  ASSERT_TRUE(WriteSafetensors(
                  path, {Random("a", DType::kBF16, {2, 3}, 1), Random("b", DType::kF32, {}, 2)})
                  .ok());
  const auto file = ReadAll(path);
  ASSERT_TRUE(ParsePrefix(file, file.size(), ReadSafetensors).ok());
  for (size_t n = 0; n < file.size(); ++n) {
    EXPECT_FALSE(ParsePrefix(file, n, ReadSafetensors).ok()) << "prefix " << n;
  }
}

// Flipping any single byte either still parses (a data byte) or is an error; when it parses,
// every view stays inside the file.
template <typename Reader>
void FlipEveryByte(const std::vector<uint8_t>& file, Reader reader, int* errors) {
  for (size_t i = 0; i < file.size(); ++i) {
    for (uint8_t mask : {uint8_t{0xff}, uint8_t{0x01}, uint8_t{0x80}}) {
      std::vector<uint8_t> buf = file;
      buf[i] ^= mask;
      auto r = reader(absl::Span<const uint8_t>(buf.data(), buf.size()));
      if (!r.ok()) {
        ++*errors;
        continue;
      }
      for (const auto& [name, t] : *r) {
        const auto* p = static_cast<const uint8_t*>(t.data);
        ASSERT_GE(p, buf.data()) << name;
        ASSERT_LE(p + t.nbytes, buf.data() + buf.size()) << name;
        ASSERT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * DTypeSize(t.dtype)) << name;
      }
    }
  }
}

TEST(CheckpointTest, FlippedBytesNeverEscapeTheFile) {
  const std::vector<OwnedTensor> tensors = {Random("a", DType::kBF16, {2, 3}, 1),
                                            Random("b", DType::kF16, {1, 1, 2}, 2)};
  int torch_errors = 0, st_errors = 0;
  ASSERT_TRUE(WriteTorchCheckpoint(TempPath("flip.pth"), tensors).ok());
  FlipEveryByte(ReadAll(TempPath("flip.pth")), ReadTorchZip, &torch_errors);
  ASSERT_TRUE(WriteSafetensors(TempPath("flip.safetensors"), tensors).ok());
  FlipEveryByte(ReadAll(TempPath("flip.safetensors")), ReadSafetensors, &st_errors);
  // Structure bytes dominate these small files; most flips must be detected.
  EXPECT_GT(torch_errors, 100);
  EXPECT_GT(st_errors, 100);
}

std::vector<uint8_t> SafetensorsWithHeader(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes);
  for (int k = 0; k < 8; ++k) f[k] = static_cast<uint8_t>(header.size() >> (8 * k));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

TEST(CheckpointTest, SafetensorsHeaderErrors) {
  struct Case {
    std::string header;
    size_t data;
    std::string error;
  };
  const Case cases[] = {
      {R"({"x":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", 2, "tensor x has dtype I8"},
      {R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8, "needs 8 bytes"},
      {R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "outside the 4-byte"},
      {R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "outside"},
      {R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative"},
      {R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", 8, "non-negative"},
      {R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
       R"("data_offsets":[0,8]}})",
       8, "too large"},
      {R"({"x":{"dtype":"F32","data_offsets":[0,8]}})", 8, "needs dtype"},
      {R"({"x":[1,2]})", 0, "not an object"},
      {R"([1,2])", 0, "not a JSON object"},
      {R"({"x":)", 0, "not valid JSON"},
      {std::string(100, '[') + std::string(100, ']'), 0, "nested too deeply"},
  };
  for (const Case& c : cases) {
    const auto file = SafetensorsWithHeader(c.header, c.data);
    auto r = ReadSafetensors(absl::Span<const uint8_t>(file.data(), file.size()));
    EXPECT_THAT(r.status().message(), HasSubstr(c.error)) << c.header;
  }
  // A header length beyond the file, and one over the sanity limit.
  std::vector<uint8_t> f = SafetensorsWithHeader("{}", 0);
  f[0] = 200;
  EXPECT_THAT(ReadSafetensors(absl::Span<const uint8_t>(f.data(), f.size())).status().message(),
              HasSubstr("exceeds the 10-byte file"));
  // __metadata__ is ignored.
  const auto meta = SafetensorsWithHeader(
      R"({"__metadata__":{"format":"pt"},"x":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}})",
      2);
  auto ok = ReadSafetensors(absl::Span<const uint8_t>(meta.data(), meta.size()));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 1u);
}

}  // namespace
}  // namespace modrwkv

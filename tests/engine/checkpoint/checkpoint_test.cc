// Tests Checkpoint::Open and the writers: round trips in both formats, and that damaged files
// (truncated at every length, flipped bytes, wrong magic) are errors, never crashes.
#include "engine/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/le_bytes.h"
#include "engine/checkpoint/safetensors.h"
#include "engine/checkpoint/torch_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

// A file name in the test's temporary folder, removed when the test binary exits.
std::string TempPath(const std::string& name) {
  static std::vector<std::string>* paths = [] {
    std::atexit([] {
      for (const std::string& p : *paths) std::remove(p.c_str());
    });
    return new std::vector<std::string>();
  }();
  paths->push_back(absl::StrCat(::testing::TempDir(), "/ckpt_", ::getpid(), "_", name));
  return paths->back();
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

// A torch archive larger than 4 GiB, as a sparse file: the 5 GiB tensor is a hole that is never
// written. Opening it must parse only the directory and data.pkl (ZIP64 sizes and offsets for
// real) and must not read the tensor: peak RSS stays far below the file size.
TEST(CheckpointTest, OpensMultiGigabyteSparseArchiveWithoutReadingIt) {
  constexpr uint64_t kBigNumel = uint64_t{5} << 29;  // bf16: 5 GiB
  constexpr uint64_t kBigBytes = kBigNumel * 2;
  auto str = [](const std::string& v) {
    std::string o = "X";
    le::Append32(o, static_cast<uint32_t>(v.size()));
    return o + v;
  };
  auto i64 = [](uint64_t v) {  // LONG1 with 8 bytes
    std::string o = "\x8a\x08";
    le::Append64(o, v);
    return o;
  };
  const std::string odict = "ccollections\nOrderedDict\n)R";
  auto tensor = [&](const std::string& key, const std::string& type, uint64_t numel) {
    return "ctorch._utils\n_rebuild_tensor_v2\n((" + str("storage") + "ctorch\n" + type + "\n" +
           str(key) + str("cpu") + i64(numel) + "tQ" + i64(0) + "(" + i64(numel) + "t(" + i64(1) +
           "t\x89" + odict + "tR";
  };
  const std::string pkl = "\x80\x02" + odict + "(" + str("big") +
                          tensor("0", "BFloat16Storage", kBigNumel) + str("tail") +
                          tensor("1", "FloatStorage", 2) + "u.";
  const std::string tail_data("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f

  struct Entry {
    std::string name;
    uint64_t offset, size;
  };
  std::vector<Entry> entries;
  const std::string path = TempPath("sparse.pth");
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  uint64_t pos = 0;
  auto put = [&](const std::string& bytes) {
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(pos)),
              static_cast<ssize_t>(bytes.size()));
    pos += bytes.size();
  };
  auto local = [&](const std::string& name, uint64_t size) {
    entries.push_back({name, pos, size});
    const bool big = size >= 0xffffffffu;
    std::string h;
    le::Append32(h, 0x04034b50);
    le::Append16(h, 45);
    le::Append16(h, 0);
    le::Append16(h, 0);
    le::Append32(h, 0);
    le::Append32(h, 0);  // crc: 0 here and in the directory; checksums are off below
    le::Append32(h, big ? 0xffffffffu : static_cast<uint32_t>(size));
    le::Append32(h, big ? 0xffffffffu : static_cast<uint32_t>(size));
    le::Append16(h, static_cast<uint16_t>(name.size()));
    le::Append16(h, big ? 20 : 0);
    h += name;
    if (big) {
      le::Append16(h, 1);
      le::Append16(h, 16);
      le::Append64(h, size);
      le::Append64(h, size);
    }
    put(h);
  };
  local("sparse/data.pkl", pkl.size());
  put(pkl);
  local("sparse/data/0", kBigBytes);
  pos += kBigBytes;  // the hole
  local("sparse/data/1", tail_data.size());
  put(tail_data);
  local("sparse/version", 2);
  put("3\n");
  const uint64_t cd_offset = pos;
  std::string cd;
  for (const Entry& e : entries) {
    const bool big_size = e.size >= 0xffffffffu, big_off = e.offset >= 0xffffffffu;
    std::string extra;
    if (big_size || big_off) {
      le::Append16(extra, 1);
      le::Append16(extra, static_cast<uint16_t>((big_size ? 16 : 0) + (big_off ? 8 : 0)));
      if (big_size) {
        le::Append64(extra, e.size);
        le::Append64(extra, e.size);
      }
      if (big_off) le::Append64(extra, e.offset);
    }
    le::Append32(cd, 0x02014b50);
    le::Append32(cd, 45 | (45 << 16));
    le::Append32(cd, 0);
    le::Append32(cd, 0);
    le::Append32(cd, 0);
    le::Append32(cd, big_size ? 0xffffffffu : static_cast<uint32_t>(e.size));
    le::Append32(cd, big_size ? 0xffffffffu : static_cast<uint32_t>(e.size));
    le::Append16(cd, static_cast<uint16_t>(e.name.size()));
    le::Append16(cd, static_cast<uint16_t>(extra.size()));
    le::Append32(cd, 0);
    le::Append16(cd, 0);
    le::Append32(cd, 0);
    le::Append32(cd, big_off ? 0xffffffffu : static_cast<uint32_t>(e.offset));
    cd += e.name + extra;
  }
  const uint64_t eocd64 = cd_offset + cd.size();
  le::Append32(cd, 0x06064b50);
  le::Append64(cd, 44);
  le::Append32(cd, 45 | (45 << 16));
  le::Append64(cd, 0);
  le::Append64(cd, entries.size());
  le::Append64(cd, entries.size());
  le::Append64(cd, eocd64 - cd_offset);
  le::Append64(cd, cd_offset);
  le::Append32(cd, 0x07064b50);
  le::Append32(cd, 0);
  le::Append64(cd, eocd64);
  le::Append32(cd, 1);
  le::Append32(cd, 0x06054b50);
  le::Append64(cd, 0xffffffffffffffffu);  // disks 0, entries saturated
  le::Append64(cd, 0xffffffffffffffffu);  // cd size and offset saturated
  le::Append16(cd, 0);
  cd[cd.size() - 22 + 4] = cd[cd.size() - 22 + 5] = cd[cd.size() - 22 + 6] =
      cd[cd.size() - 22 + 7] = 0;  // disk numbers are 0
  put(cd);
  ASSERT_EQ(::close(fd), 0);

  struct rusage before;
  ::getrusage(RUSAGE_SELF, &before);
  // Checksums off: verifying them is exactly the read of the whole file this test rules out.
  auto ckpt = Checkpoint::Open(path, {.verify_checksums = false});
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const TensorView* big = (*ckpt)->Find("big");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->nbytes, kBigBytes);
  EXPECT_EQ(big->shape, std::vector<int64_t>{static_cast<int64_t>(kBigNumel)});
  const TensorView* tail = (*ckpt)->Find("tail");
  ASSERT_NE(tail, nullptr);
  float v[2];
  std::memcpy(v, tail->data, 8);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], 2.0f);
  EXPECT_EQ(static_cast<const uint8_t*>(tail->data) - static_cast<const uint8_t*>(big->data),
            static_cast<ptrdiff_t>(kBigBytes + 30 + 13));
  struct rusage after;
  ::getrusage(RUSAGE_SELF, &after);
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024);  // KiB
  ckpt->reset();
  std::remove(path.c_str());
}

// Offset of the local header of zip entry `name` in `file`.
size_t LocalHeaderOf(const std::vector<uint8_t>& file, const std::string& name) {
  const std::string sig = "PK\x03\x04";
  for (size_t i = 0; i + 30 + name.size() <= file.size(); ++i) {
    if (std::memcmp(&file[i], sig.data(), 4) == 0 && le::Load16(&file[i + 26]) == name.size() &&
        std::memcmp(&file[i + 30], name.data(), name.size()) == 0) {
      return i;
    }
  }
  return std::string::npos;
}

// A local header whose extra length grew by 64 bytes keeps the tensor data 64-byte aligned but
// moves it: a reader that trusts the local header alone would hand out the wrong bytes.
TEST(CheckpointTest, ZipLocalHeaderThatDisagreesWithTheDirectoryIsRefused) {
  const std::string path = TempPath("local.pth");
  ASSERT_TRUE(WriteTorchCheckpoint(path, SampleTensors()).ok());
  std::vector<uint8_t> file = ReadAll(path);
  const size_t lh = LocalHeaderOf(file, "archive/data/0");
  ASSERT_NE(lh, std::string::npos);
  const uint16_t extra = le::Load16(&file[lh + 28]);
  file[lh + 28] = static_cast<uint8_t>((extra + 64) & 0xff);
  file[lh + 29] = static_cast<uint8_t>((extra + 64) >> 8);
  WriteAll(path, file);
  for (bool verify : {true, false}) {
    auto r = Checkpoint::Open(path, {.verify_checksums = verify});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << verify;
    EXPECT_THAT(r.status().message(), HasSubstr(path));
    EXPECT_THAT(r.status().message(), HasSubstr("local header of archive/data/0"));
    EXPECT_THAT(r.status().message(), HasSubstr("extra field"));
  }
}

// A flipped bit inside tensor data leaves every structure intact: only the CRC-32 finds it.
TEST(CheckpointTest, ChecksumsOfStoredEntriesAreVerifiedByDefault) {
  const std::string path = TempPath("crc.pth");
  const std::vector<OwnedTensor> tensors = SampleTensors();
  ASSERT_TRUE(WriteTorchCheckpoint(path, tensors).ok());
  std::vector<uint8_t> file = ReadAll(path);
  const size_t lh = LocalHeaderOf(file, "archive/data/0");  // emb.weight, the first tensor
  ASSERT_NE(lh, std::string::npos);
  const size_t data = lh + 30 + le::Load16(&file[lh + 26]) + le::Load16(&file[lh + 28]);
  file[data + 7] ^= 0x10;
  WriteAll(path, file);

  auto r = Checkpoint::Open(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
  EXPECT_THAT(r.status().message(),
              HasSubstr("entry archive/data/0: CRC-32 mismatch, expected 0x"));
  EXPECT_THAT(r.status().message(), HasSubstr("actual 0x"));

  // Opt-out: the file opens and the damage is visible in the tensor.
  auto unchecked = Checkpoint::Open(path, {.verify_checksums = false});
  ASSERT_TRUE(unchecked.ok()) << unchecked.status();
  const TensorView* emb = (*unchecked)->Find("emb.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(static_cast<const uint8_t*>(emb->data)[7], tensors[0].bytes[7] ^ 0x10);
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

// The safetensors format requires the data_offsets, sorted, to tile the data section exactly:
// from 0, without gaps or overlaps, to its end (no hidden bytes, no aliased tensors). Keys are
// unique and the header starts with '{'.
TEST(CheckpointTest, SafetensorsOffsetsMustTileTheDataSection) {
  auto f32 = [](const std::string& name, int n, int begin, int end) {
    return absl::StrCat("\"", name, "\":{\"dtype\":\"F32\",\"shape\":[", n, "],\"data_offsets\":[",
                        begin, ",", end, "]}");
  };
  struct Case {
    std::string header;
    size_t data;
    std::string error;
  };
  const Case cases[] = {
      {absl::StrCat("{", f32("a", 2, 0, 8), ",", f32("b", 2, 4, 12), "}"), 12,
       "data_offsets of b [4, 12) overlap a [0, 8)"},
      {absl::StrCat("{", f32("a", 2, 0, 8), ",", f32("b", 2, 0, 8), "}"), 8,
       "data_offsets of b [0, 8) overlap a [0, 8)"},
      {absl::StrCat("{", f32("a", 2, 0, 8), ",", f32("b", 2, 12, 20), "}"), 20,
       "data_offsets leave bytes [8, 12) of the data section unused (before b)"},
      {absl::StrCat("{", f32("b", 2, 4, 12), "}"), 12,
       "data_offsets leave bytes [0, 4) of the data section unused (before b)"},
      {absl::StrCat("{", f32("a", 2, 0, 8), "}"), 12,
       "data_offsets leave bytes [8, 12) of the data section unused (at its end)"},
      {absl::StrCat("{", f32("a", 2, 0, 8), ",", f32("a", 2, 0, 8), "}"), 8,
       "tensor a appears twice"},
      {absl::StrCat(" {", f32("a", 2, 0, 8), "}"), 8, "it must start with '{'"},
  };
  for (const Case& c : cases) {
    const auto file = SafetensorsWithHeader(c.header, c.data);
    auto r = ReadSafetensors(absl::Span<const uint8_t>(file.data(), file.size()));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << c.header;
    EXPECT_THAT(r.status().message(), HasSubstr(c.error)) << c.header;
  }
  // Any order in the header, empty tensors anywhere, trailing spaces after the JSON: all fine.
  const auto ok =
      SafetensorsWithHeader(absl::StrCat("{", f32("b", 2, 8, 16), ",", f32("e", 0, 8, 8), ",",
                                         f32("a", 2, 0, 8), ",", f32("z", 0, 16, 16), "}   "),
                            16);
  auto r = ReadSafetensors(absl::Span<const uint8_t>(ok.data(), ok.size()));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 4u);
}

}  // namespace
}  // namespace modrwkv

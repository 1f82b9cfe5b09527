// Tests the zip directory reader (engine/checkpoint/zip_reader.cc) against our writer and against
// hand-made archives with ZIP64 fields, comments and out-of-range offsets.
#include "engine/checkpoint/zip_reader.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "engine/checkpoint/atomic_file.h"
#include "engine/checkpoint/le_bytes.h"
#include "engine/checkpoint/zip_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(ZipReaderTest, Crc32KnownValue) {
  EXPECT_EQ(Crc32(Bytes("123456789")), 0xcbf43926u);
  EXPECT_EQ(Crc32(Bytes("")), 0u);
}

TEST(ZipReaderTest, ReadsWhatZipWriterWrites) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/zip_", ::getpid(), ".zip");
  {
    auto f = AtomicFile::Create(path);
    ASSERT_TRUE(f.ok()) << f.status();
    ZipWriter w(f->get());
    ASSERT_TRUE(w.AddStored("arc/a", absl::string_view("hello")).ok());
    ASSERT_TRUE(w.AddStored("arc/empty", absl::string_view("")).ok());
    ASSERT_TRUE(w.AddStored("arc/b", absl::string_view(std::string(1000, 'x'))).ok());
    ASSERT_TRUE(w.Finish().ok());
    ASSERT_TRUE((*f)->Commit().ok());
  }
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), {});
  auto entries = ReadZipDirectory(Bytes(file));
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  const std::vector<std::string> want = {"hello", "", std::string(1000, 'x')};
  for (size_t i = 0; i < 3; ++i) {
    const ZipEntry& e = (*entries)[i];
    EXPECT_EQ(e.data_offset % ZipWriter::kAlignment, 0u) << e.name;
    auto data = StoredEntryBytes(Bytes(file), e);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(std::string(data->begin(), data->end()), want[i]);
    EXPECT_EQ(e.crc32, Crc32(*data));
  }
}

// One stored entry, optionally with saturated 32-bit fields resolved through ZIP64 extras.
struct HandZip {
  bool zip64_fields = false;  // central directory says 0xffffffff, extra field has the values
  bool omit_zip64_extra = false;
  bool zip64_eocd = false;  // ZIP64 end record + locator; plain EOCD saturated
  std::string comment;
  uint16_t method = 0;
  uint16_t flags = 0;
  // As torch.save writes entries: general purpose bit 3 set, zero CRC and sizes in the local
  // header, the real ones in a data descriptor after the data.
  bool descriptor = false;
  bool descriptor_signature = true;
  uint32_t descriptor_size = 7;

  std::string Build() const {
    const std::string name = "a/data.pkl", data = "payload";
    const uint16_t all_flags = flags | (descriptor ? 0x808 : 0);
    std::string z;
    le::Append32(z, 0x04034b50);
    le::Append16(z, 45);
    le::Append16(z, all_flags);
    le::Append16(z, method);
    le::Append32(z, 0);
    le::Append32(z, 0);
    le::Append32(z, descriptor ? 0 : static_cast<uint32_t>(data.size()));
    le::Append32(z, descriptor ? 0 : static_cast<uint32_t>(data.size()));
    le::Append16(z, static_cast<uint16_t>(name.size()));
    le::Append16(z, 7);  // local extra differs from the central one: data follows it
    z += name;
    le::Append16(z, 0x4246);  // "FB" padding record, as torch writes
    le::Append16(z, 3);
    z += "ZZZ" + data;
    if (descriptor) {
      if (descriptor_signature) le::Append32(z, 0x08074b50);
      le::Append32(z, 0);  // CRC, as the central directory says
      le::Append32(z, descriptor_size);
      le::Append32(z, descriptor_size);
    }
    const uint64_t cd_offset = z.size();
    std::string extra;
    if (zip64_fields && !omit_zip64_extra) {
      le::Append16(extra, 0x0001);
      le::Append16(extra, 24);
      le::Append64(extra, data.size());
      le::Append64(extra, data.size());
      le::Append64(extra, 0);
    }
    const uint32_t sat = 0xffffffffu;
    le::Append32(z, 0x02014b50);
    le::Append16(z, 45);
    le::Append16(z, 45);
    le::Append16(z, all_flags);
    le::Append16(z, method);
    le::Append32(z, 0);
    le::Append32(z, 0);
    le::Append32(z, zip64_fields ? sat : static_cast<uint32_t>(data.size()));
    le::Append32(z, zip64_fields ? sat : static_cast<uint32_t>(data.size()));
    le::Append16(z, static_cast<uint16_t>(name.size()));
    le::Append16(z, static_cast<uint16_t>(extra.size()));
    le::Append16(z, 0);
    le::Append16(z, 0);
    le::Append16(z, 0);
    le::Append32(z, 0);
    le::Append32(z, zip64_fields ? sat : 0);
    z += name + extra;
    const uint64_t cd_size = z.size() - cd_offset;
    if (zip64_eocd) {
      const uint64_t rec = z.size();
      le::Append32(z, 0x06064b50);
      le::Append64(z, 44);
      le::Append16(z, 45);
      le::Append16(z, 45);
      le::Append32(z, 0);
      le::Append32(z, 0);
      le::Append64(z, 1);
      le::Append64(z, 1);
      le::Append64(z, cd_size);
      le::Append64(z, cd_offset);
      le::Append32(z, 0x07064b50);
      le::Append32(z, 0);
      le::Append64(z, rec);
      le::Append32(z, 1);
    }
    le::Append32(z, 0x06054b50);
    le::Append32(z, 0);
    le::Append16(z, zip64_eocd ? 0xffff : 1);
    le::Append16(z, zip64_eocd ? 0xffff : 1);
    le::Append32(z, zip64_eocd ? sat : static_cast<uint32_t>(cd_size));
    le::Append32(z, zip64_eocd ? sat : static_cast<uint32_t>(cd_offset));
    le::Append16(z, static_cast<uint16_t>(comment.size()));
    return z + comment;
  }
};

template <typename F>
std::string Make(F set) {
  HandZip h;
  set(h);
  return h.Build();
}

std::string Payload(const std::string& zip) {
  auto entries = ReadZipDirectory(Bytes(zip));
  if (!entries.ok()) return std::string(entries.status().message());
  if (entries->size() != 1) return "entries != 1";
  auto data = StoredEntryBytes(Bytes(zip), (*entries)[0]);
  if (!data.ok()) return std::string(data.status().message());
  return std::string(data->begin(), data->end());
}

TEST(ZipReaderTest, HandMadeArchives) {
  EXPECT_EQ(Payload(Make([](HandZip&) {})), "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) { h.zip64_fields = true; })), "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) { h.zip64_eocd = true; })), "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) {
              h.zip64_fields = true;
              h.zip64_eocd = true;
            })),
            "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) { h.comment = "a comment with PK\x05\x06 inside"; })),
            "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) { h.descriptor = true; })), "payload");
  EXPECT_EQ(Payload(Make([](HandZip& h) {
              h.descriptor = true;
              h.descriptor_signature = false;  // the signature is optional (APPNOTE 4.3.9.3)
            })),
            "payload");
}

TEST(ZipReaderTest, DamagedArchives) {
  EXPECT_THAT(Payload(Make([](HandZip& h) {
                h.zip64_fields = true;
                h.omit_zip64_extra = true;
              })),
              HasSubstr("needs a ZIP64 extra field"));
  EXPECT_THAT(Payload(Make([](HandZip& h) { h.method = 8; })),
              HasSubstr("is compressed (method 8)"));
  EXPECT_THAT(Payload(Make([](HandZip& h) { h.flags = 1; })), HasSubstr("is encrypted"));

  // The ZIP64 locator points outside the file.
  std::string z = Make([](HandZip& h) { h.zip64_eocd = true; });
  z[z.size() - 22 - 20 + 8 + 7] = 0x7f;
  EXPECT_THAT(Payload(z), HasSubstr("ZIP64 end-of-directory offset is out of range"));

  // Saturated EOCD fields without a ZIP64 locator.
  z = Make([](HandZip& h) { h.zip64_eocd = true; });
  z.erase(z.size() - 22 - 20 - 56, 56 + 20);
  EXPECT_THAT(Payload(z), HasSubstr("has no ZIP64 locator"));

  // Central directory offset past the end.
  z = Make([](HandZip&) {});
  le::Append32(z, 0);  // dummy; rewrite EOCD fields in place below
  z.resize(z.size() - 4);
  z[z.size() - 6 + 3] = 0x40;
  EXPECT_THAT(Payload(z), HasSubstr("lies outside"));

  // More entries than the directory can hold.
  z = Make([](HandZip&) {});
  z[z.size() - 12] = 0x50;
  EXPECT_THAT(Payload(z), HasSubstr("entries cannot fit"));

  // Local header offset beyond the file.
  z = Make([](HandZip&) {});
  const size_t cd = z.find("PK\x01\x02");
  z[cd + 42 + 3] = 0x10;
  EXPECT_THAT(Payload(z), HasSubstr("lies outside the file"));

  // A data descriptor whose sizes disagree with the central directory.
  EXPECT_THAT(Payload(Make([](HandZip& h) {
                h.descriptor = true;
                h.descriptor_size = 8;
              })),
              HasSubstr("data descriptor of a/data.pkl disagrees with the central directory"));

  EXPECT_THAT(Payload("PK\x03\x04"), HasSubstr("shorter than an end-of-directory record"));
  EXPECT_THAT(Payload(std::string(100, 'x')), HasSubstr("not found"));
}

// Two entries written by ZipWriter, read back into memory.
std::string WriterArchive() {
  const std::string path = absl::StrCat(::testing::TempDir(), "/zip_", ::getpid(), "_w.zip");
  auto f = AtomicFile::Create(path);
  EXPECT_TRUE(f.ok()) << f.status();
  ZipWriter w(f->get());
  EXPECT_TRUE(w.AddStored("arc/a", absl::string_view("hello")).ok());
  EXPECT_TRUE(w.AddStored("arc/b", absl::string_view(std::string(1000, 'x'))).ok());
  EXPECT_TRUE(w.Finish().ok());
  EXPECT_TRUE((*f)->Commit().ok());
  std::ifstream in(path, std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), {});
  std::remove(path.c_str());
  return file;
}

// The local header of the second entry (arc/b) and the central directory both describe it; every
// disagreement is refused, naming the entry and the field. Before this check a wrong local name
// length or extra length silently moved the data offset.
TEST(ZipReaderTest, LocalHeaderMustAgreeWithCentralDirectory) {
  const std::string good = WriterArchive();
  ASSERT_TRUE(ReadZipDirectory(Bytes(good)).ok());
  const size_t lh = good.find("PK\x03\x04", 1);
  ASSERT_NE(lh, std::string::npos);
  ASSERT_EQ(good.substr(lh + 30, 5), "arc/b");
  auto put16 = [](std::string& z, size_t at, uint16_t v) {
    z[at] = static_cast<char>(v & 0xff);
    z[at + 1] = static_cast<char>(v >> 8);
  };
  auto put32 = [&](std::string& z, size_t at, uint32_t v) {
    put16(z, at, static_cast<uint16_t>(v & 0xffff));
    put16(z, at + 2, static_cast<uint16_t>(v >> 16));
  };
  const uint16_t extra_len = le::Load16(reinterpret_cast<const uint8_t*>(good.data()) + lh + 28);
  struct Case {
    std::function<void(std::string&)> patch;
    std::string error;
  };
  const Case cases[] = {
      {[&](std::string& z) { put16(z, lh + 26, 6); }, "name length is 6, central directory: 5"},
      {[&](std::string& z) { z[lh + 34] = 'c'; },
       "name is \"arc/c\", central directory: \"arc/b\""},
      {[&](std::string& z) { put16(z, lh + 8, 8); },
       "compression method is 8, central directory: 0"},
      {[&](std::string& z) { put32(z, lh + 14, 0x12345678); }, "CRC-32 is 0x12345678"},
      {[&](std::string& z) { put32(z, lh + 18, 1001); },
       "compressed size is 1001, central directory: 1000"},
      {[&](std::string& z) { put32(z, lh + 22, 999); },
       "uncompressed size is 999, central directory: 1000"},
      {[&](std::string& z) { put16(z, lh + 6, 1); }, "flags are 0x1, central directory: 0x0"},
      // The extra field's records must fill it exactly: a longer extra length would skip data.
      {[&](std::string& z) { put16(z, lh + 28, extra_len + 2); }, "extra field"},
  };
  for (const Case& c : cases) {
    std::string z = good;
    c.patch(z);
    auto r = ReadZipDirectory(Bytes(z));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << c.error;
    EXPECT_THAT(r.status().message(), HasSubstr("local header of arc/b")) << c.error;
    EXPECT_THAT(r.status().message(), HasSubstr(c.error));
  }
}

TEST(ZipReaderTest, Crc32OfStoredEntries) {
  std::string z = WriterArchive();
  auto entries = ReadZipDirectory(Bytes(z));
  ASSERT_TRUE(entries.ok()) << entries.status();
  for (const ZipEntry& e : *entries) EXPECT_TRUE(VerifyCrc32(Bytes(z), e).ok()) << e.name;
  const ZipEntry& b = (*entries)[1];
  const uint32_t want = b.crc32;
  z[b.data_offset + 500] ^= 1;  // a flipped bit in the data is found only by the checksum
  auto again = ReadZipDirectory(Bytes(z));
  ASSERT_TRUE(again.ok()) << again.status();
  const absl::Status st = VerifyCrc32(Bytes(z), (*again)[1]);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(st.message(), HasSubstr("entry arc/b"));
  EXPECT_THAT(st.message(), HasSubstr(absl::StrFormat("expected 0x%08x", want)));
  auto data = StoredEntryBytes(Bytes(z), (*again)[1]);
  ASSERT_TRUE(data.ok());
  EXPECT_THAT(st.message(), HasSubstr(absl::StrFormat("actual 0x%08x", Crc32(*data))));
  EXPECT_TRUE(VerifyCrc32(Bytes(z), (*again)[0]).ok());
}

}  // namespace
}  // namespace modrwkv

// Zip central-directory reader (PKWARE APPNOTE 6.3: EOCD, ZIP64 EOCD + locator, ZIP64 extra field).
#include "engine/checkpoint/zip_reader.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/checkpoint/crc32.h"
#include "engine/checkpoint/le_bytes.h"

namespace modrwkv {
namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64EocdMinSize = 56;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kFlagEncrypted = 1 << 0;
constexpr uint16_t kFlagDescriptor = 1 << 3;  // CRC and sizes follow the data, not the header
// Flags that change where or how an entry's bytes are read: local and central must agree on them.
constexpr uint16_t kLayoutFlags = kFlagEncrypted | kFlagDescriptor;
constexpr uint32_t k32Max = 0xffffffffu;

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("corrupt zip archive: ", what));
}

struct DirectoryLocation {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

// Finds the end-of-central-directory record (searching back over a possible archive comment) and,
// when present, the ZIP64 record that supersedes its 16/32-bit fields.
absl::StatusOr<DirectoryLocation> FindDirectory(absl::Span<const uint8_t> a) {
  if (a.size() < kEocdSize) {
    return Corrupt("file is shorter than an end-of-directory record");
  }
  const size_t last = a.size() - kEocdSize;
  const size_t first = last > 0xffff ? last - 0xffff : 0;
  size_t eocd = SIZE_MAX;
  for (size_t pos = last + 1; pos-- > first;) {
    if (le::Load32(a.data() + pos) == kEocdSig &&
        pos + kEocdSize + le::Load16(a.data() + pos + 20) <= a.size()) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX) {
    return Corrupt("end-of-central-directory record not found (truncated?)");
  }
  const uint8_t* e = a.data() + eocd;
  DirectoryLocation loc;
  loc.entries = le::Load16(e + 10);
  loc.size = le::Load32(e + 12);
  loc.offset = le::Load32(e + 16);
  const bool has_locator =
      eocd >= kZip64LocatorSize && le::Load32(e - kZip64LocatorSize) == kZip64LocatorSig;
  if (!has_locator && (le::Load16(e + 4) != 0 || le::Load16(e + 6) != 0)) {
    return Corrupt("multi-disk archives are not supported");
  }
  if (has_locator) {
    const uint64_t z64 = le::Load64(e - kZip64LocatorSize + 8);
    if (z64 > a.size() || a.size() - z64 < kZip64EocdMinSize) {
      return Corrupt("ZIP64 end-of-directory offset is out of range");
    }
    const uint8_t* z = a.data() + z64;
    if (le::Load32(z) != kZip64EocdSig) {
      return Corrupt("bad ZIP64 end-of-directory signature");
    }
    loc.entries = le::Load64(z + 32);
    loc.size = le::Load64(z + 40);
    loc.offset = le::Load64(z + 48);
  } else if (loc.entries == 0xffff || loc.size == k32Max || loc.offset == k32Max) {
    return Corrupt("end-of-directory record needs ZIP64 fields but has no ZIP64 locator");
  }
  if (loc.offset > a.size() || loc.size > a.size() - loc.offset) {
    return Corrupt(absl::StrCat("central directory [", loc.offset, ", +", loc.size,
                                ") lies outside the ", a.size(), "-byte file"));
  }
  if (loc.entries > loc.size / kCentralHeaderSize) {
    return Corrupt(
        absl::StrCat(loc.entries, " entries cannot fit a ", loc.size, "-byte central directory"));
  }
  return loc;
}

// Replaces saturated 32-bit fields with the 64-bit values of the ZIP64 extra field, in the order
// APPNOTE 4.5.3 gives: uncompressed size, compressed size, local header offset.
absl::Status ApplyZip64Extra(const uint8_t* extra, size_t len, const std::string& name,
                             uint64_t& usize, uint64_t& csize, uint64_t& local) {
  const bool need_u = usize == k32Max, need_c = csize == k32Max, need_o = local == k32Max;
  if (!need_u && !need_c && !need_o) {
    return absl::OkStatus();
  }
  size_t pos = 0;
  while (pos + 4 <= len) {
    const uint16_t id = le::Load16(extra + pos);
    const uint16_t sz = le::Load16(extra + pos + 2);
    pos += 4;
    if (sz > len - pos) {
      return Corrupt(absl::StrCat("extra field of ", name, " overruns"));
    }
    if (id == kZip64ExtraId) {
      size_t f = pos;
      const size_t end = pos + sz;
      auto take = [&](uint64_t& v) -> bool {
        if (f + 8 > end) {
          return false;
        }
        v = le::Load64(extra + f);
        f += 8;
        return true;
      };
      if ((need_u && !take(usize)) || (need_c && !take(csize)) || (need_o && !take(local))) {
        return Corrupt(absl::StrCat("ZIP64 extra field of ", name, " is too short"));
      }
      return absl::OkStatus();
    }
    pos += sz;
  }
  return Corrupt(absl::StrCat("entry ", name, " needs a ZIP64 extra field but has none"));
}

// The local header repeats what the central directory says about an entry; a reader that trusted
// only one of them would read the wrong bytes when they disagree. Checks every field both carry
// and returns the offset of the entry's data.
absl::StatusOr<uint64_t> CheckLocalHeader(absl::Span<const uint8_t> a, uint64_t local,
                                          const ZipEntry& e) {
  auto mismatch = [&](absl::string_view field, const std::string& local_value,
                      const std::string& central_value) {
    return Corrupt(absl::StrCat("local header of ", e.name,
                                " disagrees with the central directory: ", field, " ", local_value,
                                ", central directory: ", central_value));
  };
  if (local > a.size() || a.size() - local < kLocalHeaderSize) {
    return Corrupt(
        absl::StrCat("local header of ", e.name, " at offset ", local, " lies outside the file"));
  }
  const uint8_t* lh = a.data() + local;
  if (le::Load32(lh) != kLocalHeaderSig) {
    return Corrupt(absl::StrCat("bad local header signature for ", e.name));
  }
  const uint16_t flags = le::Load16(lh + 6);
  const uint16_t method = le::Load16(lh + 8);
  const uint32_t crc = le::Load32(lh + 14);
  uint64_t csize = le::Load32(lh + 18);
  uint64_t usize = le::Load32(lh + 22);
  const size_t name_len = le::Load16(lh + 26);
  const size_t extra_len = le::Load16(lh + 28);
  if (name_len != e.name.size()) {
    return mismatch("name length is", absl::StrCat(name_len), absl::StrCat(e.name.size()));
  }
  if (a.size() - local - kLocalHeaderSize < name_len + extra_len) {
    return Corrupt(absl::StrCat("local header of ", e.name, " overruns the file (truncated?)"));
  }
  const absl::string_view name(reinterpret_cast<const char*>(lh + kLocalHeaderSize), name_len);
  if (name != e.name) {
    return mismatch("name is", absl::StrCat("\"", absl::CHexEscape(name), "\""),
                    absl::StrCat("\"", absl::CHexEscape(e.name), "\""));
  }
  if ((flags & kLayoutFlags) != (e.flags & kLayoutFlags)) {
    return mismatch("flags are", absl::StrFormat("0x%x", flags), absl::StrFormat("0x%x", e.flags));
  }
  if (method != e.method) {
    return mismatch("compression method is", absl::StrCat(method), absl::StrCat(e.method));
  }
  // The extra field is a sequence of (id, size, data) records that fills it exactly; a wrong
  // extra length (which moves the data offset) almost never keeps that true.
  const uint8_t* extra = lh + kLocalHeaderSize + name_len;
  for (size_t pos = 0; pos < extra_len;) {
    if (extra_len - pos < 4 || le::Load16(extra + pos + 2) > extra_len - pos - 4) {
      return Corrupt(
          absl::StrCat("local header of ", e.name, ": the records of its ", extra_len,
                       "-byte extra field do not fill it exactly (wrong extra length?)"));
    }
    pos += 4 + le::Load16(extra + pos + 2);
  }
  if (flags & kFlagDescriptor) {
    // CRC and sizes are zero here (APPNOTE 4.4.4) and follow the data; some writers fill them in.
    auto agrees = [](uint64_t local_value, uint64_t central) {
      return local_value == 0 || local_value == k32Max || local_value == central;
    };
    if (!agrees(crc, e.crc32) || !agrees(csize, e.size) || !agrees(usize, e.uncompressed_size)) {
      return mismatch("CRC-32/sizes are", absl::StrFormat("0x%08x/%d/%d", crc, csize, usize),
                      absl::StrFormat("0x%08x/%d/%d", e.crc32, e.size, e.uncompressed_size));
    }
  } else {
    uint64_t unused_offset = 0;
    MODRWKV_RETURN_IF_ERROR(ApplyZip64Extra(extra, extra_len, e.name, usize, csize, unused_offset));
    if (crc != e.crc32) {
      return mismatch("CRC-32 is", absl::StrFormat("0x%08x", crc),
                      absl::StrFormat("0x%08x", e.crc32));
    }
    if (csize != e.size) {
      return mismatch("compressed size is", absl::StrCat(csize), absl::StrCat(e.size));
    }
    if (usize != e.uncompressed_size) {
      return mismatch("uncompressed size is", absl::StrCat(usize),
                      absl::StrCat(e.uncompressed_size));
    }
  }
  return local + kLocalHeaderSize + name_len + extra_len;
}

// The data descriptor after an entry written with bit 3 (torch.save writes every entry so):
// optional signature, CRC-32, then both sizes in 4 bytes, or in 8 for ZIP64 entries.
absl::Status CheckDataDescriptor(absl::Span<const uint8_t> a, const ZipEntry& e) {
  const uint64_t end = e.data_offset + e.size;
  auto matches = [&](uint64_t p, size_t width) {
    if (p > a.size() || a.size() - p < 4 + 2 * width) {
      return false;
    }
    const uint8_t* d = a.data() + p;
    const uint64_t c = width == 4 ? le::Load32(d + 4) : le::Load64(d + 4);
    const uint64_t u = width == 4 ? le::Load32(d + 8) : le::Load64(d + 12);
    return le::Load32(d) == e.crc32 && c == e.size && u == e.uncompressed_size;
  };
  const bool signed_ = end + 4 <= a.size() && le::Load32(a.data() + end) == kDescriptorSig;
  for (uint64_t p : {signed_ ? end + 4 : end, end}) {
    if (matches(p, 4) || matches(p, 8)) {
      return absl::OkStatus();
    }
  }
  return Corrupt(absl::StrFormat(
      "data descriptor of %s disagrees with the central directory (CRC-32 0x%08x, compressed "
      "size %d, uncompressed size %d) or is missing",
      e.name, e.crc32, e.size, e.uncompressed_size));
}

}  // namespace

absl::StatusOr<std::vector<ZipEntry>> ReadZipDirectory(absl::Span<const uint8_t> a) {
  auto loc_or = FindDirectory(a);
  if (!loc_or.ok()) {
    return loc_or.status();
  }
  const DirectoryLocation loc = *loc_or;

  std::vector<ZipEntry> entries;
  entries.reserve(static_cast<size_t>(loc.entries));
  const uint8_t* base = a.data();
  const uint64_t cd_end = loc.offset + loc.size;
  uint64_t pos = loc.offset;
  for (uint64_t i = 0; i < loc.entries; ++i) {
    if (cd_end - pos < kCentralHeaderSize) {
      return Corrupt("central directory is truncated");
    }
    const uint8_t* h = base + pos;
    if (le::Load32(h) != kCentralHeaderSig) {
      return Corrupt(absl::StrCat("bad central directory signature at offset ", pos));
    }
    ZipEntry e;
    e.flags = le::Load16(h + 8);
    e.method = le::Load16(h + 10);
    e.crc32 = le::Load32(h + 16);
    uint64_t csize = le::Load32(h + 20);
    uint64_t usize = le::Load32(h + 24);
    const size_t name_len = le::Load16(h + 28);
    const size_t extra_len = le::Load16(h + 30);
    const size_t comment_len = le::Load16(h + 32);
    uint64_t local = le::Load32(h + 42);
    if (cd_end - pos - kCentralHeaderSize < name_len + extra_len + comment_len) {
      return Corrupt("central directory entry overruns the directory");
    }
    e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    auto st =
        ApplyZip64Extra(h + kCentralHeaderSize + name_len, extra_len, e.name, usize, csize, local);
    if (!st.ok()) {
      return st;
    }
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;

    e.size = csize;
    e.uncompressed_size = usize;
    // The data starts after the local header, whose extra field may differ from the central
    // directory's (torch pads the local one to align tensor data to 64 bytes).
    MODRWKV_ASSIGN_OR_RETURN(const uint64_t data, CheckLocalHeader(a, local, e));
    if (data > a.size() || csize > a.size() - data) {
      return Corrupt(absl::StrCat("data of ", e.name, " (", csize, " bytes at offset ", data,
                                  ") lies outside the ", a.size(), "-byte file (truncated?)"));
    }
    e.data_offset = data;
    if (e.flags & kFlagDescriptor) {
      MODRWKV_RETURN_IF_ERROR(CheckDataDescriptor(a, e));
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<absl::Span<const uint8_t>> StoredEntryBytes(absl::Span<const uint8_t> archive,
                                                           const ZipEntry& entry) {
  if (entry.flags & kFlagEncrypted) {
    return absl::InvalidArgumentError(absl::StrCat("zip entry ", entry.name, " is encrypted"));
  }
  if (entry.method != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry ", entry.name, " is compressed (method ", entry.method,
                     "); checkpoints must store entries uncompressed, as torch.save does"));
  }
  if (entry.size != entry.uncompressed_size) {
    return Corrupt(absl::StrCat("stored entry ", entry.name, " has compressed size ", entry.size,
                                " != uncompressed size ", entry.uncompressed_size));
  }
  // ReadZipDirectory guaranteed the range; re-check so a hand-made ZipEntry cannot overrun.
  if (entry.data_offset > archive.size() || entry.size > archive.size() - entry.data_offset) {
    return Corrupt(absl::StrCat("entry ", entry.name, " lies outside the archive"));
  }
  return archive.subspan(static_cast<size_t>(entry.data_offset), static_cast<size_t>(entry.size));
}

absl::Status VerifyCrc32(absl::Span<const uint8_t> archive, const ZipEntry& entry) {
  MODRWKV_ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, StoredEntryBytes(archive, entry));
  const uint32_t actual = Crc32(bytes);
  if (actual != entry.crc32) {
    return Corrupt(absl::StrFormat(
        "entry %s: CRC-32 mismatch, expected 0x%08x (central directory), actual 0x%08x of its %d "
        "bytes",
        entry.name, entry.crc32, actual, bytes.size()));
  }
  return absl::OkStatus();
}

absl::Status VerifyZipChecksums(absl::Span<const uint8_t> archive,
                                const std::vector<ZipEntry>& entries) {
  for (const ZipEntry& e : entries) {
    if (e.method == 0 && !(e.flags & kFlagEncrypted)) {
      MODRWKV_RETURN_IF_ERROR(VerifyCrc32(archive, e));
    }
  }
  return absl::OkStatus();
}

}  // namespace modrwkv

// Zip writer for stored entries (PKWARE APPNOTE 6.3), byte-compatible in layout with miniz as
// torch uses it: no data descriptors, "FB" padding extra field, ZIP64 end records always present.
#include "engine/checkpoint/zip_writer.h"

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/le_bytes.h"

namespace modrwkv {
namespace {

constexpr uint32_t k32Max = 0xffffffffu;
constexpr uint16_t kVersionZip64 = 45;
constexpr uint16_t kVersionPlain = 20;

}  // namespace

absl::Status ZipWriter::AddStored(const std::string& name, absl::Span<const uint8_t> data) {
  if (name.empty() || name.size() > 0xffff) {
    return absl::InvalidArgumentError(absl::StrCat("bad zip entry name length ", name.size()));
  }
  const uint64_t offset = out_->offset();
  const uint64_t size = data.size();
  const bool big = size >= k32Max;
  const uint32_t crc = Crc32(data);

  std::string zip64;
  if (big) {  // local headers carry both sizes when either is saturated
    le::Append16(zip64, 0x0001);
    le::Append16(zip64, 16);
    le::Append64(zip64, size);
    le::Append64(zip64, size);
  }
  const uint64_t unpadded = offset + 30 + name.size() + zip64.size() + 4;
  const uint64_t pad = (kAlignment - unpadded % kAlignment) % kAlignment;

  std::string h;
  le::Append32(h, 0x04034b50);
  le::Append16(h, big ? kVersionZip64 : kVersionPlain);
  le::Append16(h, 0);  // flags
  le::Append16(h, 0);  // stored
  le::Append16(h, 0);  // time
  le::Append16(h, 0);  // date
  le::Append32(h, crc);
  le::Append32(h, big ? k32Max : static_cast<uint32_t>(size));
  le::Append32(h, big ? k32Max : static_cast<uint32_t>(size));
  le::Append16(h, static_cast<uint16_t>(name.size()));
  le::Append16(h, static_cast<uint16_t>(zip64.size() + 4 + pad));
  h += name;
  h += zip64;
  h += "FB";
  le::Append16(h, static_cast<uint16_t>(pad));
  h.append(pad, 'Z');
  if (auto st = out_->Write(h); !st.ok()) {
    return st;
  }
  if (auto st = out_->Write(data.data(), data.size()); !st.ok()) {
    return st;
  }
  entries_.push_back({name, offset, size, crc});
  return absl::OkStatus();
}

absl::Status ZipWriter::Finish() {
  const uint64_t cd_offset = out_->offset();
  std::string cd;
  for (const Entry& e : entries_) {
    const bool big_size = e.size >= k32Max;
    const bool big_offset = e.offset >= k32Max;
    std::string extra;
    if (big_size || big_offset) {
      le::Append16(extra, 0x0001);
      le::Append16(extra, static_cast<uint16_t>((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) {
        le::Append64(extra, e.size);  // uncompressed
        le::Append64(extra, e.size);  // compressed
      }
      if (big_offset) {
        le::Append64(extra, e.offset);
      }
    }
    const uint16_t version = extra.empty() ? kVersionPlain : kVersionZip64;
    le::Append32(cd, 0x02014b50);
    le::Append16(cd, version);  // made by (MS-DOS attributes)
    le::Append16(cd, version);  // needed
    le::Append16(cd, 0);
    le::Append16(cd, 0);
    le::Append16(cd, 0);
    le::Append16(cd, 0);
    le::Append32(cd, e.crc);
    le::Append32(cd, big_size ? k32Max : static_cast<uint32_t>(e.size));
    le::Append32(cd, big_size ? k32Max : static_cast<uint32_t>(e.size));
    le::Append16(cd, static_cast<uint16_t>(e.name.size()));
    le::Append16(cd, static_cast<uint16_t>(extra.size()));
    le::Append16(cd, 0);  // comment
    le::Append16(cd, 0);  // disk
    le::Append16(cd, 0);  // internal attributes
    le::Append32(cd, 0);  // external attributes
    le::Append32(cd, big_offset ? k32Max : static_cast<uint32_t>(e.offset));
    cd += e.name;
    cd += extra;
  }
  const uint64_t cd_size = cd.size();
  const uint64_t n = entries_.size();
  const uint64_t eocd64_offset = cd_offset + cd_size;

  std::string tail;
  le::Append32(tail, 0x06064b50);
  le::Append64(tail, 44);  // size of the rest of this record
  le::Append16(tail, kVersionZip64);
  le::Append16(tail, kVersionZip64);
  le::Append32(tail, 0);
  le::Append32(tail, 0);
  le::Append64(tail, n);
  le::Append64(tail, n);
  le::Append64(tail, cd_size);
  le::Append64(tail, cd_offset);

  le::Append32(tail, 0x07064b50);
  le::Append32(tail, 0);
  le::Append64(tail, eocd64_offset);
  le::Append32(tail, 1);

  le::Append32(tail, 0x06054b50);
  le::Append16(tail, 0);
  le::Append16(tail, 0);
  le::Append16(tail, static_cast<uint16_t>(n >= 0xffff ? 0xffff : n));
  le::Append16(tail, static_cast<uint16_t>(n >= 0xffff ? 0xffff : n));
  le::Append32(tail, cd_size >= k32Max ? k32Max : static_cast<uint32_t>(cd_size));
  le::Append32(tail, cd_offset >= k32Max ? k32Max : static_cast<uint32_t>(cd_offset));
  le::Append16(tail, 0);  // comment

  if (auto st = out_->Write(cd); !st.ok()) {
    return st;
  }
  return out_->Write(tail);
}

}  // namespace modrwkv

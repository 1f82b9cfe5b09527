// Tests Crc32 (engine/checkpoint/crc32.cc): known values, and the folding path against zlib on
// every length around its block sizes, at every alignment, and when continuing a running CRC.
#include "engine/checkpoint/crc32.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace modrwkv {
namespace {

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crc32Test, KnownValues) {
  EXPECT_EQ(Crc32(Bytes("123456789")), 0xcbf43926u);
  EXPECT_EQ(Crc32(Bytes("")), 0u);
  EXPECT_EQ(Crc32(Bytes(std::string(1000, 'x'))), Crc32Zlib(Bytes(std::string(1000, 'x'))));
  EXPECT_EQ(Crc32(Bytes(std::string(4096, '\0'))), 0xc71c0011u);
}

TEST(Crc32Test, MatchesZlibAtEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(5000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; n <= 300; ++n) {
      const absl::Span<const uint8_t> s(buf.data() + offset, n);
      ASSERT_EQ(Crc32(s), Crc32Zlib(s)) << "offset " << offset << " length " << n;
    }
  }
  const absl::Span<const uint8_t> all(buf.data() + 3, 4990);
  EXPECT_EQ(Crc32(all), Crc32Zlib(all));
  // Continuing: CRC(a ++ b) from CRC(a).
  const uint32_t head = Crc32(all.subspan(0, 1234));
  EXPECT_EQ(Crc32(all.subspan(1234), head), Crc32Zlib(all));
}

}  // namespace
}  // namespace modrwkv

// F32ToF16 against the processor's own conversion (F16C's vcvtps2ph, round to nearest even) over
// a sweep of every region of the f32 encodings, and the round trip through F16ToF32.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/base/tensor.h"
#include "gtest/gtest.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace modrwkv {
namespace {

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t HardwareF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

TEST(HalfConvertTest, MatchesTheProcessorsConversion) {
  // cpuid rather than __builtin_cpu_supports: clang 14 does not know "f16c" there.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_F16C)) {
    GTEST_SKIP() << "no F16C on this processor";
  }
  int64_t checked = 0;
  // A prime stride over all 2^32 patterns, plus every pattern near the boundaries: zero, the
  // subnormal range, the normal threshold 2^-14, the overflow threshold 65520, infinity.
  auto check = [&](uint32_t bits) {
    const float f = FromBits(bits);
    const uint16_t want = HardwareF16(f), got = F32ToF16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(got))) << std::hex << bits;
    } else {
      ASSERT_EQ(got, want) << std::hex << "f32 bits 0x" << bits << " (" << f << ")";
    }
    ++checked;
  };
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 65521) check(static_cast<uint32_t>(b));
  for (uint32_t center : {0x00000000u, 0x33000000u, 0x33800000u, 0x387fc000u, 0x38800000u,
                          0x477fe000u, 0x477ff000u, 0x7f800000u}) {
    for (uint32_t d = 0; d < 20000; ++d) {
      check((center + d) & 0x7fffffffu);
      check(((center - d) & 0x7fffffffu) | 0x80000000u);
    }
  }
  EXPECT_GT(checked, 300000);
}
#endif  // __x86_64__

TEST(HalfConvertTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToF16(f), h) << std::hex << h;
  }
}

}  // namespace
}  // namespace modrwkv

// Reads files written by real torch.save (torch 1.13) and the safetensors package, made by
// tools/golden/gen_checkpoint_fixtures.py, and checks every name, dtype, shape and value; checks
// that damaged real files are refused with the right error; and pins the bytes our writers produce
// (the script verifies that real torch loads those files).
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kDir = std::string(MODRWKV_GOLDEN_DIR) + "/checkpoint/";

json Expected() {
  std::ifstream f(kDir + "expected.json");
  json j = json::parse(f, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "cannot parse " << kDir << "expected.json";
  return j;
}

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

DType ParseDType(const std::string& s) {
  return s == "bf16" ? DType::kBF16 : s == "f16" ? DType::kF16 : DType::kF32;
}

// f32 -> f16 for the exactly representable values the spec uses (normals and zero).
uint16_t F32ToF16Exact(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000);
  if ((b & 0x7fffffff) == 0) return sign;
  const int exp = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (exp << 10) | ((b >> 13) & 0x3ff));
}

void ExpectMatches(const Checkpoint& ckpt, const json& tensors, const std::string& file) {
  EXPECT_EQ(ckpt.tensors().size(), tensors.size()) << file;
  for (const auto& [name, want] : tensors.items()) {
    const TensorView* t = ckpt.Find(name);
    ASSERT_NE(t, nullptr) << file << ": missing " << name;
    EXPECT_EQ(t->dtype, ParseDType(want["dtype"].get<std::string>())) << file << ": " << name;
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>()) << file << ": " << name;
    const auto values = want["values"].get<std::vector<double>>();
    ASSERT_EQ(static_cast<size_t>(t->numel()), values.size()) << file << ": " << name;
    ASSERT_EQ(t->nbytes, values.size() * DTypeSize(t->dtype));
    if (values.empty()) continue;
    std::vector<float> got(values.size());
    ConvertToF32(t->dtype, t->data, got.size(), got.data());
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(got[i], static_cast<float>(values[i])) << file << ": " << name << "[" << i << "]";
    }
  }
}

TEST(CheckpointGoldenTest, ReadsFilesWrittenByTorchAndSafetensors) {
  const json expected = Expected();
  ASSERT_GE(expected["files"].size(), 3u);
  for (const auto& [file, spec] : expected["files"].items()) {
    SCOPED_TRACE(file);
    auto ckpt = Checkpoint::Open(kDir + file);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->format(), spec["format"] == "torch" ? CheckpointFormat::kTorchZip
                                                           : CheckpointFormat::kSafetensors);
    ExpectMatches(**ckpt, spec["tensors"], file);
  }
}

TEST(CheckpointGoldenTest, SharedStorageViewsPointIntoOneStorage) {
  auto ckpt = Checkpoint::Open(kDir + "torch_state_dict.pth");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const TensorView* a = (*ckpt)->Find("shared.a");
  const TensorView* b = (*ckpt)->Find("shared.b");
  ASSERT_TRUE(a && b);
  // shared[4:12] and shared[16:32] of one bf16 storage: 12 elements apart.
  EXPECT_EQ(static_cast<const uint8_t*>(b->data) - static_cast<const uint8_t*>(a->data), 24);
}

TEST(CheckpointGoldenTest, RefusesDamagedRealFilesWithClearErrors) {
  const json expected = Expected();
  ASSERT_GE(expected["bad"].size(), 5u);
  for (const auto& [file, error] : expected["bad"].items()) {
    auto ckpt = Checkpoint::Open(kDir + file);
    ASSERT_FALSE(ckpt.ok()) << file;
    EXPECT_THAT(ckpt.status().message(), HasSubstr(error.get<std::string>())) << file;
    EXPECT_THAT(ckpt.status().message(), HasSubstr(kDir + file));
  }
}

std::vector<OwnedTensor> WrittenSpecTensors(const json& spec) {
  std::vector<OwnedTensor> out;
  for (const auto& [name, want] : spec.items()) {
    OwnedTensor t;
    t.name = name;
    t.dtype = ParseDType(want["dtype"].get<std::string>());
    t.shape = want["shape"].get<std::vector<int64_t>>();
    for (double v : want["values"].get<std::vector<double>>()) {
      const float f = static_cast<float>(v);
      uint8_t b[4];
      size_t n = DTypeSize(t.dtype);
      if (t.dtype == DType::kF32) {
        std::memcpy(b, &f, 4);
      } else {
        const uint16_t h = t.dtype == DType::kBF16 ? F32ToBF16(f) : F32ToF16Exact(f);
        std::memcpy(b, &h, 2);
      }
      t.bytes.insert(t.bytes.end(), b, b + n);
    }
    out.push_back(std::move(t));
  }
  return out;
}

// Our writers' output is pinned: the generator script checks that torch.load and safetensors read
// these exact files. MODRWKV_UPDATE_GOLDEN=1 rewrites them after an intended writer change.
TEST(CheckpointGoldenTest, OurWritersProduceThePinnedFiles) {
  const json expected = Expected();
  const auto tensors = WrittenSpecTensors(expected["modrwkv_written"]);
  ASSERT_EQ(tensors.size(), 6u);
  const bool update = std::getenv("MODRWKV_UPDATE_GOLDEN") != nullptr;
  for (const std::string ext : {".pth", ".safetensors"}) {
    SCOPED_TRACE(ext);
    const std::string golden = kDir + "modrwkv_written" + ext;
    const std::string path =
        update ? golden : absl::StrCat(::testing::TempDir(), "/modrwkv_written", ext);
    ASSERT_TRUE(
        (ext == ".pth" ? WriteTorchCheckpoint(path, tensors) : WriteSafetensors(path, tensors))
            .ok());
    auto ckpt = Checkpoint::Open(golden);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status()
                           << " (create it with MODRWKV_UPDATE_GOLDEN=1, then run "
                              "tools/golden/gen_checkpoint_fixtures.py --verify-only)";
    ExpectMatches(**ckpt, expected["modrwkv_written"], golden);
    EXPECT_TRUE(ReadAll(path) == ReadAll(golden))
        << "writer output differs from " << golden << "; if intended, rerun with "
        << "MODRWKV_UPDATE_GOLDEN=1 and verify with gen_checkpoint_fixtures.py --verify-only";
  }
}

}  // namespace
}  // namespace modrwkv

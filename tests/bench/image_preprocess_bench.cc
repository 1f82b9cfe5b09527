// Decode + preprocess of a JPEG to the SigLIP2 384x384 input, one thread (the encoder pool runs
// one image per worker): 1024x768 and 4000x3000 from the golden corpus, and the stages apart.
#include <benchmark/benchmark.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "encoders/image/image_decode.h"
#include "encoders/image/preprocess.h"

namespace modrwkv::encoders {
namespace {

std::vector<uint8_t> ReadImage(const std::string& name) {
  std::ifstream f(std::string(MODRWKV_GOLDEN_DIR) + "/image/images/" + name, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

PreprocessConfig Siglip384() {
  auto cfg =
      LoadPreprocessorConfig(std::string(MODRWKV_GOLDEN_DIR) + "/image/configs/siglip2_384.json");
  return cfg.ok() ? *cfg : PreprocessConfig{};
}

const char* const kFiles[] = {"photo_1024x768.jpg", "big_4000x3000.jpg"};

void BM_DecodePreprocess(benchmark::State& state) {
  const std::vector<uint8_t> bytes = ReadImage(kFiles[state.range(0)]);
  const PreprocessConfig cfg = Siglip384();
  std::vector<float> out(3 * 384 * 384);
  for (auto _ : state) {
    auto rgb = DecodeImage(bytes, {}, "bench");
    if (!rgb.ok()) {
      state.SkipWithError(std::string(rgb.status().message()).c_str());
      return;
    }
    Preprocess(*rgb, cfg, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(kFiles[state.range(0)]);
}
BENCHMARK(BM_DecodePreprocess)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_DecodeOnly(benchmark::State& state) {
  const std::vector<uint8_t> bytes = ReadImage(kFiles[state.range(0)]);
  for (auto _ : state) {
    auto rgb = DecodeImage(bytes, {}, "bench");
    benchmark::DoNotOptimize(rgb);
  }
  state.SetLabel(kFiles[state.range(0)]);
}
BENCHMARK(BM_DecodeOnly)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_PreprocessOnly(benchmark::State& state) {
  auto rgb = DecodeImage(ReadImage(kFiles[state.range(0)]), {}, "bench");
  if (!rgb.ok()) {
    state.SkipWithError("decode failed");
    return;
  }
  const PreprocessConfig cfg = Siglip384();
  std::vector<float> out(3 * 384 * 384);
  for (auto _ : state) {
    Preprocess(*rgb, cfg, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(kFiles[state.range(0)]);
}
BENCHMARK(BM_PreprocessOnly)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace modrwkv::encoders

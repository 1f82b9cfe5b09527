// Decode + Whisper log-mel of a 10 s and a 30 s clip, one thread (the encoder pool runs one item
// per worker): a 48 kHz stereo 16-bit WAV built in memory (so downmix and resampling run), the
// stages apart, and the decode of every compressed golden file (items = seconds of audio).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "encoders/audio/audio_decode.h"
#include "encoders/audio/whisper_features.h"

namespace modrwkv::encoders {
namespace {

// A RIFF WAVE of `seconds` at 48 kHz, 2 channels, 16 bits: a chirp on the left, a tremolo tone
// on the right.
std::vector<uint8_t> Wav48kStereo(int seconds) {
  const uint32_t rate = 48000, frames = rate * seconds, data = frames * 4;
  std::vector<uint8_t> b(44 + data);
  auto put32 = [&](size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); };
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&b[at], &v, 2); };
  std::memcpy(&b[0], "RIFF", 4);
  put32(4, 36 + data);
  std::memcpy(&b[8], "WAVEfmt ", 8);
  put32(16, 16);
  put16(20, 1);  // PCM
  put16(22, 2);
  put32(24, rate);
  put32(28, rate * 4);
  put16(32, 4);
  put16(34, 16);
  std::memcpy(&b[36], "data", 4);
  put32(40, data);
  for (uint32_t i = 0; i < frames; ++i) {
    const double t = static_cast<double>(i) / rate;
    const auto l = static_cast<int16_t>(12000 * std::sin(2 * M_PI * (100 * t + 60 * t * t)));
    const auto r = static_cast<int16_t>(9000 * (0.6 + 0.4 * std::sin(2 * M_PI * 3 * t)) *
                                        std::sin(2 * M_PI * 440 * t));
    std::memcpy(&b[44 + 4 * i], &l, 2);
    std::memcpy(&b[46 + 4 * i], &r, 2);
  }
  return b;
}

const WhisperFrontEnd& FrontEnd() {
  static const WhisperFrontEnd* fe = WhisperFrontEnd::Create({}).value().release();
  return *fe;
}

void BM_DecodeLogMel(benchmark::State& state) {
  const std::vector<uint8_t> wav = Wav48kStereo(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto samples = DecodeAudio(wav, {}, "bench");
    if (!samples.ok()) {
      state.SkipWithError(std::string(samples.status().message()).c_str());
      return;
    }
    auto features = FrontEnd().Compute(*samples);
    benchmark::DoNotOptimize(features.values.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));  // seconds of audio
}
BENCHMARK(BM_DecodeLogMel)->Arg(10)->Arg(30)->Unit(benchmark::kMillisecond);

void BM_DecodeOnly(benchmark::State& state) {
  const std::vector<uint8_t> wav = Wav48kStereo(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto samples = DecodeAudio(wav, {}, "bench");
    benchmark::DoNotOptimize(samples);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodeOnly)->Arg(10)->Arg(30)->Unit(benchmark::kMillisecond);

void BM_LogMelOnly(benchmark::State& state) {
  auto samples = DecodeAudio(Wav48kStereo(static_cast<int>(state.range(0))), {}, "bench");
  if (!samples.ok()) {
    state.SkipWithError("decode failed");
    return;
  }
  for (auto _ : state) {
    auto features = FrontEnd().Compute(*samples);
    benchmark::DoNotOptimize(features.values.data());
  }
}
BENCHMARK(BM_LogMelOnly)->Arg(10)->Arg(30)->Unit(benchmark::kMillisecond);

const char* const kCompressed[] = {"speech_16k_mono.flac",        "speech_44k_stereo.mp3",
                                   "speech_48k_mono.opus",        "sweep_44k_stereo.ogg",
                                   "speech_noise_48k_stereo.m4a", "speech_48k_stereo.webm"};

void BM_DecodeGoldenFile(benchmark::State& state) {
  const std::string name = kCompressed[state.range(0)];
  std::ifstream f(std::string(MODRWKV_GOLDEN_DIR) + "/audio/files/" + name, std::ios::binary);
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(f),
                                   std::istreambuf_iterator<char>()};
  size_t samples = 0;
  for (auto _ : state) {
    auto out = DecodeAudio(bytes, {}, "bench");
    if (!out.ok()) {
      state.SkipWithError(std::string(out.status().message()).c_str());
      return;
    }
    samples = out->size();
  }
  state.SetLabel(name);
  // items/s = seconds of audio decoded per second.
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * samples / 16000.0));
  state.counters["x_realtime"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * samples / 16000.0, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeGoldenFile)->DenseRange(0, 5)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace modrwkv::encoders

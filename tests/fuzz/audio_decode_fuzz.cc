// libFuzzer harness for client audio bytes: probe, decode with tight limits, and run the Whisper
// and WavLM front ends on what decodes. Seeds: tests/golden/audio/files and bad/ (every
// container, whole, truncated and overwritten). The audio sources are compiled into this target so
// that they carry the fuzzer's instrumentation; FFmpeg and FFTW themselves are not instrumented.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "encoders/audio/audio_decode.cc"
#include "encoders/audio/wavlm_features.cc"
#include "encoders/audio/whisper_features.cc"

namespace {

using modrwkv::encoders::AudioDecodeOptions;

const modrwkv::encoders::WhisperFrontEnd& FrontEnd() {
  // 1 s chunks keep each run fast; the code paths are those of the 30 s default.
  static const auto* fe = [] {
    modrwkv::encoders::WhisperFeatureConfig cfg;
    cfg.chunk_length = 1;
    return modrwkv::encoders::WhisperFrontEnd::Create(cfg).value().release();
  }();
  return *fe;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  AudioDecodeOptions options;
  options.limits.max_bytes = 1 << 20;
  options.limits.max_seconds = 5;
  options.limits.time_budget_seconds = 2;
  options.limits.max_packets = 20000;
  const absl::Span<const uint8_t> in(data, size);
  auto info = modrwkv::encoders::ProbeAudio(in, options, "fuzz");
  auto samples = modrwkv::encoders::DecodeAudio(in, options, "fuzz");
  // Decoding may fail after a good probe (corrupt packets), never succeed after a failed one.
  if (samples.ok() && !info.ok()) std::abort();
  if (!samples.ok()) {
    if (samples.status().message().rfind("fuzz: ", 0) != 0 &&
        samples.status().code() == absl::StatusCode::kInvalidArgument) {
      std::abort();  // every client error names the field
    }
    return 0;
  }
  // The output is bounded by the duration limit (+ the resampler's tail).
  if (samples->empty() || samples->size() > 5 * 16000 + 1024) std::abort();
  for (float v : *samples) {
    if (!std::isfinite(v)) std::abort();
  }
  const auto features = FrontEnd().Compute(*samples);
  for (float v : features.values) {
    if (!std::isfinite(v)) std::abort();
  }
  const auto normalised = modrwkv::encoders::NormalizeWavLmInput(*samples);
  if (normalised.size() != samples->size()) std::abort();
  return 0;
}

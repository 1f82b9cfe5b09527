// DecodeAudio / ProbeAudio against the ffmpeg CLI's decode of every golden file (same
// libswresample settings), the downmix rules, every limit, and inputs that must be refused.
#include "encoders/audio/audio_decode.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <limits>
#include <thread>

#include "tests/encoders/audio/audio_golden.h"

namespace modrwkv::encoders {
namespace {

using ::modrwkv::encoders::testing::AudioManifest;
using ::modrwkv::encoders::testing::MaxAbsDiff;
using ::modrwkv::encoders::testing::ReadAudioBytes;
using ::modrwkv::encoders::testing::ReadAudioF32;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kField[] = "input[2].audio";

absl::StatusOr<std::vector<float>> Decode(const std::string& rel, AudioLimits limits = {}) {
  const std::vector<uint8_t> bytes = ReadAudioBytes(rel);
  AudioDecodeOptions options;
  options.limits = limits;
  return DecodeAudio(bytes, options, kField);
}

void ExpectInvalid(const absl::Status& status, const std::string& substr) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(std::string(kField) + ": "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(substr));
}

// Every file against its reference. The reference is the ffmpeg CLI's decode through the same
// libavcodec decoders and a libswresample with the same settings, so the samples agree up to
// float rounding (bit-identical here: measured max |diff| 0 on every file, 3e-8 for the numpy mean
// of three channels). The tolerance, 1e-6 of full scale (-120 dB, below 16-bit quantisation), is
// there for a machine whose libswresample picks other SIMD kernels than the generator's.
TEST(AudioDecode, MatchesTheReferenceDecodeOfEveryFile) {
  const auto manifest = AudioManifest();
  int checked = 0;
  for (const auto& entry : manifest["files"]) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto samples = Decode(file);
    ASSERT_TRUE(samples.ok()) << samples.status();
    const std::vector<float> want = ReadAudioF32(entry["reference"]);
    ASSERT_EQ(want.size(), entry["reference_samples"].get<size_t>());
    EXPECT_EQ(samples->size(), want.size());
    const double diff = MaxAbsDiff(*samples, want);
    EXPECT_LE(diff, 1e-6);
    std::cout << file << ": " << samples->size() << " samples, max |diff| " << diff << "\n";
    ++checked;
  }
  EXPECT_GE(checked, 12);
}

TEST(AudioDecode, ProbeReadsTheHeader) {
  const auto manifest = AudioManifest();
  for (const auto& entry : manifest["files"]) {
    const std::string file = entry["file"];
    SCOPED_TRACE(file);
    auto info = ProbeAudio(ReadAudioBytes(file), {}, kField);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->container, entry["container"].get<std::string>());
    EXPECT_EQ(info->codec.substr(0, 3), entry["codec"].get<std::string>().substr(0, 3));
    EXPECT_EQ(info->sample_rate, entry["sample_rate"].get<int>());
    EXPECT_EQ(info->channels, entry["channels"].get<int>());
    EXPECT_NEAR(info->duration_seconds, entry["duration"].get<double>(), 0.06);
  }
  auto info = ProbeAudio(ReadAudioBytes("files/surround51_48k.flac"), {}, kField);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->codec, "flac");
  EXPECT_EQ(info->channel_layout, "5.1");
  info = ProbeAudio(ReadAudioBytes("files/three_channel_16k.wav"), {}, kField);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->channel_layout, "");  // no channel mask in the file
}

// (L + R) / 2 exactly, although L + R leaves [-1, 1]: the downmix is normalised.
TEST(AudioDecode, StereoDownmixIsTheMeanOfTheChannels) {
  auto samples = Decode("files/downmix_16k_stereo.wav");
  ASSERT_TRUE(samples.ok()) << samples.status();
  const std::vector<float> want = ReadAudioF32("refs/downmix_16k_stereo_wav.f32");
  ASSERT_EQ(samples->size(), want.size());
  EXPECT_LE(MaxAbsDiff(*samples, want), 1e-7);
  float peak = 0;
  for (float v : *samples) peak = std::max(peak, std::abs(v));
  EXPECT_GT(peak, 0.8f);
  EXPECT_LE(peak, 1.0f);
}

// No channel mask and three channels: an equal-weight mean, not FFmpeg's guessed 2.1 layout
// (which would drop the third channel as an LFE).
TEST(AudioDecode, UnspecifiedLayoutIsAveraged) {
  auto samples = Decode("files/three_channel_16k.wav");
  ASSERT_TRUE(samples.ok()) << samples.status();
  const std::vector<float> want = ReadAudioF32("refs/three_channel_16k_wav.f32");
  ASSERT_EQ(samples->size(), want.size());
  EXPECT_LE(MaxAbsDiff(*samples, want), 1e-7);
}

// A 16 kHz mono float WAV with the given samples.
std::vector<uint8_t> FloatWav(const std::vector<float>& x) {
  const uint32_t data = static_cast<uint32_t>(x.size() * 4);
  std::vector<uint8_t> b(44 + data);
  auto put32 = [&](size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); };
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&b[at], &v, 2); };
  std::memcpy(&b[0], "RIFF", 4);
  put32(4, 36 + data);
  std::memcpy(&b[8], "WAVEfmt ", 8);
  put32(16, 16);
  put16(20, 3);  // WAVE_FORMAT_IEEE_FLOAT
  put16(22, 1);
  put32(24, 16000);
  put32(28, 64000);
  put16(32, 4);
  put16(34, 32);
  std::memcpy(&b[36], "data", 4);
  put32(40, data);
  std::memcpy(&b[44], x.data(), data);
  return b;
}

// Found by the fuzzer: float samples of 1e30 overflowed the log-mel's float32 FFT.
TEST(AudioDecode, FloatSamplesAreBoundedAndFinite) {
  std::vector<float> x(1600, 0.25f);
  x[10] = 1.5f;  // a codec-like overshoot is kept
  x[20] = 1e30f;
  x[30] = -1e30f;
  auto samples = DecodeAudio(FloatWav(x), {}, kField);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), x.size());
  EXPECT_EQ((*samples)[0], 0.25f);
  EXPECT_EQ((*samples)[10], 1.5f);
  EXPECT_EQ((*samples)[20], 16.0f);
  EXPECT_EQ((*samples)[30], -16.0f);
  x[800] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(DecodeAudio(FloatWav(x), {}, kField).status(),
                "audio has a non-finite sample (NaN or infinity) at 0.050 s");
}

TEST(AudioDecode, ByteLimit) {
  const auto bytes = ReadAudioBytes("files/speech_16k_mono.flac");
  AudioDecodeOptions options;
  options.limits.max_bytes = static_cast<int64_t>(bytes.size()) - 1;
  ExpectInvalid(DecodeAudio(bytes, options, kField).status(), "(max-audio-bytes)");
  options.limits.max_bytes = static_cast<int64_t>(bytes.size());
  EXPECT_TRUE(DecodeAudio(bytes, options, kField).ok());
}

TEST(AudioDecode, DurationLimitFromTheHeader) {
  AudioLimits limits;
  limits.max_seconds = 30;
  // Refused before decoding: a time budget far too short to decode a minute of FLAC is enough.
  limits.time_budget_seconds = 5;
  auto status = Decode("files/silence_60s.flac", limits).status();
  ExpectInvalid(status,
                "audio is 60.00 s long (from the header), more than the limit of 30 s "
                "(max-audio-seconds)");
  auto info = ProbeAudio(ReadAudioBytes("files/silence_60s.flac"), {limits, 16000}, kField);
  ExpectInvalid(info.status(), "(max-audio-seconds)");
  limits.max_seconds = 60;
  EXPECT_TRUE(Decode("files/silence_60s.flac", limits).ok());
}

TEST(AudioDecode, DurationLimitWhileDecoding) {
  // A WebM written to a pipe declares no duration; only decoding finds out it is a minute long.
  auto info = ProbeAudio(ReadAudioBytes("files/silence_60s_noduration.webm"), {}, kField);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_LT(info->duration_seconds, 0);
  AudioLimits limits;
  limits.max_seconds = 10;
  ExpectInvalid(Decode("files/silence_60s_noduration.webm", limits).status(),
                "audio is longer than the limit of 10 s (max-audio-seconds)");
  auto full = Decode("files/silence_60s_noduration.webm");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_NEAR(full->size(), 60 * 16000, 400);
}

TEST(AudioDecode, ChannelLimit) {
  AudioLimits limits;
  limits.max_channels = 2;
  ExpectInvalid(Decode("files/surround51_48k.flac", limits).status(),
                "audio has 6 channels, more than the limit of 2 (max-audio-channels)");
  limits.max_channels = 6;
  EXPECT_TRUE(Decode("files/surround51_48k.flac", limits).ok());
}

TEST(AudioDecode, SampleRateRange) {
  AudioLimits limits;
  limits.min_sample_rate = 16000;
  ExpectInvalid(Decode("files/speech_8k_mono.wav", limits).status(),
                "audio sample rate is 8000 Hz, outside the allowed range 16000..192000 Hz");
  limits = {};
  limits.max_sample_rate = 44100;
  ExpectInvalid(Decode("files/speech_48k_mono.opus", limits).status(), "48000 Hz");
  EXPECT_TRUE(Decode("files/speech_44k_stereo.mp3", limits).ok());
}

TEST(AudioDecode, PacketLimitAndTimeBudget) {
  AudioLimits limits;
  limits.max_packets = 3;
  ExpectInvalid(Decode("files/speech_48k_mono.opus", limits).status(),
                "more than 3 packets (max-audio-packets)");
  limits = {};
  limits.time_budget_seconds = 1e-6;
  ExpectInvalid(Decode("files/silence_60s_noduration.webm", limits).status(),
                "(audio-decode-seconds)");
}

TEST(AudioDecode, LimitsAreValidated) {
  AudioLimits limits;
  limits.max_seconds = 0;
  EXPECT_EQ(limits.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Decode("files/speech_16k_mono.flac", limits).ok());
  limits = {};
  limits.min_sample_rate = 48000;
  limits.max_sample_rate = 8000;
  EXPECT_FALSE(limits.Validate().ok());
  EXPECT_TRUE(AudioLimits{}.Validate().ok());
}

TEST(AudioDecode, EmptyAndNonAudioInputs) {
  ExpectInvalid(DecodeAudio({}, {}, kField).status(), "audio is empty (0 bytes)");
  ExpectInvalid(Decode("bad/not_audio.txt").status(), "not a supported audio file");
  // An image is refused by the format whitelist before any decoder runs.
  std::vector<uint8_t> jpeg = {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0};
  jpeg.resize(4096, 0x55);
  ExpectInvalid(DecodeAudio(jpeg, {}, kField).status(), "not a supported audio file");
  const std::vector<uint8_t> zeros(100000, 0);
  ExpectInvalid(DecodeAudio(zeros, {}, kField).status(), "");
}

// The generator's damaged copies: the first half of each file, and each file with its middle
// third overwritten. Every one is refused with a message, none crashes or hangs.
TEST(AudioDecode, TruncatedAndCorruptFilesAreRefused) {
  const auto manifest = AudioManifest();
  int checked = 0;
  for (const auto& entry : manifest["files"]) {
    const std::string name = entry["file"].get<std::string>().substr(6);  // "files/"
    for (const std::string prefix : {"truncated_", "corrupt_"}) {
      const std::vector<uint8_t> bytes = ReadAudioBytes("bad/" + prefix + name);
      if (bytes.empty()) continue;  // only one WAV has damaged copies
      // PCM has no structure to check: overwritten samples are just other samples.
      if (prefix == "corrupt_" && name.find(".wav") != std::string::npos) continue;
      SCOPED_TRACE(prefix + name);
      auto samples = DecodeAudio(bytes, {}, kField);
      EXPECT_FALSE(samples.ok()) << samples->size() << " samples decoded";
      if (!samples.ok()) {
        ExpectInvalid(samples.status(), "");
        std::cout << prefix << name << ": " << samples.status().message() << "\n";
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 15);
}

// Every prefix of a small file: errors or samples, never a crash, a hang or a wrong size.
TEST(AudioDecode, EveryPrefixOfAFileIsHandled) {
  for (const std::string file : {"files/speech_48k_mono.opus", "files/speech_44k_stereo.mp3"}) {
    const auto bytes = ReadAudioBytes(file);
    int ok = 0;
    for (size_t n = 0; n < bytes.size(); n += 97) {
      auto samples = DecodeAudio(absl::MakeConstSpan(bytes.data(), n), {}, kField);
      if (samples.ok()) {
        ++ok;
        EXPECT_FALSE(samples->empty());
      }
    }
    std::cout << file << ": " << ok << " of " << bytes.size() / 97 + 1
              << " prefixes decode (those whose header does not promise more)\n";
  }
}

TEST(AudioDecode, ConcurrentDecodesAgree) {
  const auto bytes = ReadAudioBytes("files/speech_noise_48k_stereo.m4a");
  auto want = DecodeAudio(bytes, {}, kField);
  ASSERT_TRUE(want.ok());
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto got = DecodeAudio(bytes, {}, kField);
        if (!got.ok() || *got != *want) ++bad;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// Not a benchmark (tests/bench/audio_frontend_bench.cc is): prints the decode speed once.
TEST(AudioDecode, ReportsDecodeSpeed) {
  const auto manifest = AudioManifest();
  for (const auto& entry : manifest["files"]) {
    const std::string file = entry["file"];
    if (file.find("speech_") == std::string::npos) continue;
    const auto bytes = ReadAudioBytes(file);
    const auto start = std::chrono::steady_clock::now();
    size_t samples = 0;
    constexpr int kRuns = 5;
    for (int i = 0; i < kRuns; ++i) samples += DecodeAudio(bytes, {}, kField).value().size();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << file << ": " << samples / 16000.0 / s << "x real time\n";
  }
}

}  // namespace
}  // namespace modrwkv::encoders

// Decodes client-supplied audio bytes (WAV, FLAC, MP3, Ogg Vorbis/Opus, M4A/AAC, WebM/Matroska)
// from memory with FFmpeg to the 16 kHz mono float32 samples the speech encoders take.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace modrwkv::encoders {

struct AudioLimits {
  int64_t max_bytes = 25 << 20;  // encoded size (max-audio-bytes)
  double max_seconds = 600;      // duration, from the header and while decoding (max-audio-seconds)
  int max_channels = 8;          // (max-audio-channels)
  int min_sample_rate = 4000;    // input sample rate range in Hz (min/max-audio-sample-rate)
  int max_sample_rate = 192000;
  // Bounds on the work one file can cause, whatever it declares: packets read, and wall time
  // (checked by FFmpeg's interrupt callback during I/O and between packets).
  int64_t max_packets = 2'000'000;  // (max-audio-packets)
  double time_budget_seconds = 20;  // (audio-decode-seconds)
  absl::Status Validate() const;
};

struct AudioDecodeOptions {
  AudioLimits limits;
  int sample_rate = 16000;  // output rate; the output is always mono float32
};

struct AudioInfo {
  // Demuxer name: "wav", "flac", "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", ...
  std::string container;
  std::string codec;  // decoder name: "pcm_s16le", "flac", "mp3float", "vorbis", "opus", "aac"
  int sample_rate = 0;
  int channels = 0;
  std::string channel_layout;       // FFmpeg's description ("stereo", "5.1"), "" when unspecified
  double duration_seconds = -1;     // from the header; -1 when the container does not say
  bool duration_estimated = false;  // true when FFmpeg estimated it from the bit rate (CBR MP3)
};

// Opens the container and reads its header (and the first packets, as FFmpeg's stream probing
// needs) and checks every limit that the header can answer: bytes, duration, channels, sample
// rate. A file that declares hours of audio is refused here, before anything is decoded.
// Errors are InvalidArgument with messages that start with `field` (e.g. "input[2].audio").
absl::StatusOr<AudioInfo> ProbeAudio(absl::Span<const uint8_t> bytes,
                                     const AudioDecodeOptions& options, absl::string_view field);

// Probes, then decodes the best audio stream to mono float32 at `options.sample_rate`.
//
// Downmix: libswresample's matrix for the input layout, normalised so that no output can exceed
// the inputs' range (rematrix_maxval 1; stereo becomes (L + R) / 2). A layout the file leaves
// unspecified is not guessed (FFmpeg's default layouts for 3 and 6 channels contain an LFE, which
// a mono downmix drops): 1 channel is mono, 2 are stereo, more are averaged with equal weights.
// Resampling: libswresample's default resampler (polyphase windowed sinc, 32 taps per phase,
// 1024 phases, linear interpolation between phases, cutoff 0.97, Kaiser beta 9); the golden
// fixtures' reference samples are made by the ffmpeg CLI with the same settings
// (tools/golden/gen_audio_fixtures.py).
// Samples are finite and within [-16, 16]: a float format's wilder values are clipped there (24 dB
// above full scale; lossy decoders' small overshoots are kept) and a NaN or infinity is an error.
// Errors: corrupt data (decoders run with error concealment off), a file that decodes to clearly
// less than its header's duration (truncation), no audio stream, no samples, and every limit,
// the duration also while decoding (a header may lie), are InvalidArgument naming `field`.
absl::StatusOr<std::vector<float>> DecodeAudio(absl::Span<const uint8_t> bytes,
                                               const AudioDecodeOptions& options,
                                               absl::string_view field);

}  // namespace modrwkv::encoders

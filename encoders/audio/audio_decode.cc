// Audio decoding with FFmpeg from a memory buffer: a custom AVIOContext over the client's bytes,
// demuxer and decoder whitelists, header limits, a bounded decode loop, and libswresample to
// mono float32 (see audio_decode.h for the rules).
#include "encoders/audio/audio_decode.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
}

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
namespace {

// Demuxers reachable from client bytes (matched against each demuxer's comma-separated names:
// "mov" admits "mov,mp4,m4a,3gp,3g2,mj2", "matroska" admits "matroska,webm"). Everything else
// (playlists, concat, image2, raw video, ...) is refused at probing.
constexpr char kFormatWhitelist[] = "wav,w64,aiff,flac,mp3,ogg,mov,matroska,aac";
// Decoders reachable, by their FFmpeg names. Video streams of a container are never decoded.
constexpr char kCodecWhitelist[] =
    "pcm_u8,pcm_s8,pcm_s16le,pcm_s16be,pcm_s24le,pcm_s24be,pcm_s32le,pcm_s32be,pcm_f32le,"
    "pcm_f32be,pcm_f64le,pcm_f64be,pcm_alaw,pcm_mulaw,adpcm_ms,adpcm_ima_wav,flac,alac,mp3float,"
    "mp3,mp2float,mp2,vorbis,opus,libopus,aac,aac_fixed";
constexpr int kIoBufferSize = 32 << 10;
constexpr float kMaxSample = 16.0f;  // 24 dB above full scale (see the end of DecodeAudio)

// ---- FFmpeg's log: kept off stderr, the last error of this thread kept for the Status -------

thread_local std::string last_av_error;

void LogCallback(void* avcl, int level, const char* fmt, va_list args) {
  if (level > AV_LOG_ERROR) return;
  char line[512];
  int print_prefix = 0;
  av_log_format_line2(avcl, level, fmt, args, line, sizeof line, &print_prefix);
  std::string text = line;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (!text.empty()) last_av_error = std::move(text);
}

void InitFfmpegLog() {
  static std::once_flag once;
  // Decoders run single-threaded (thread_count 1), so a message is logged on the thread that
  // decodes and the thread_local above sees it. The callback is process-wide: FFmpeg's chatter
  // about bad client files is not for the server log.
  std::call_once(once, [] { av_log_set_callback(LogCallback); });
}

std::string AvError(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof buf);
  std::string out = buf;
  if (!last_av_error.empty()) absl::StrAppend(&out, " (", last_av_error, ")");
  return out;
}

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// ---- memory I/O --------------------------------------------------------------------------

struct MemoryReader {
  const uint8_t* data;
  int64_t size;
  int64_t pos = 0;
};

int ReadPacket(void* opaque, uint8_t* buf, int buf_size) {
  auto* r = static_cast<MemoryReader*>(opaque);
  const int64_t n = std::min<int64_t>(buf_size, r->size - r->pos);
  if (n <= 0) return AVERROR_EOF;
  std::memcpy(buf, r->data + r->pos, static_cast<size_t>(n));
  r->pos += n;
  return static_cast<int>(n);
}

int64_t Seek(void* opaque, int64_t offset, int whence) {
  auto* r = static_cast<MemoryReader*>(opaque);
  whence &= ~AVSEEK_FORCE;
  if (whence == AVSEEK_SIZE) return r->size;
  int64_t base = 0;
  if (whence == SEEK_CUR) {
    base = r->pos;
  } else if (whence == SEEK_END) {
    base = r->size;
  } else if (whence != SEEK_SET) {
    return AVERROR(EINVAL);
  }
  // Overflow-safe: offsets come from the file being parsed.
  if ((offset > 0 && base > INT64_MAX - offset) || base + offset < 0 || base + offset > r->size) {
    return AVERROR(EINVAL);
  }
  r->pos = base + offset;
  return r->pos;
}

using Clock = std::chrono::steady_clock;

struct Deadline {
  Clock::time_point end;
  bool Passed() const { return Clock::now() > end; }
};

int InterruptCallback(void* opaque) { return static_cast<Deadline*>(opaque)->Passed() ? 1 : 0; }

// Nested files (HLS segments, MOV external references, ...) are never opened.
int RefuseIoOpen(AVFormatContext*, AVIOContext**, const char*, int, AVDictionary**) {
  return AVERROR(EPERM);
}

struct CodecCtxFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct SwrFree {
  void operator()(SwrContext* s) const { swr_free(&s); }
};

// The demuxer over the caller's bytes; it must not outlive them.
class Demuxer {
 public:
  Demuxer(absl::Span<const uint8_t> bytes, double budget_seconds)
      : reader_{bytes.data(), static_cast<int64_t>(bytes.size())}, budget_seconds_(budget_seconds) {
    deadline_.end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(budget_seconds));
  }
  Demuxer(const Demuxer&) = delete;
  Demuxer& operator=(const Demuxer&) = delete;
  ~Demuxer() {
    avformat_close_input(&fmt_);                     // does not free a custom AVIOContext
    if (avio_ != nullptr) av_freep(&avio_->buffer);  // FFmpeg may have replaced the buffer
    avio_context_free(&avio_);
  }

  absl::Status Open(absl::string_view field) {
    auto* buffer = static_cast<uint8_t*>(av_malloc(kIoBufferSize));
    if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory for audio I/O");
    avio_ = avio_alloc_context(buffer, kIoBufferSize, 0, &reader_, ReadPacket, nullptr, Seek);
    if (avio_ == nullptr) {
      av_free(buffer);
      return absl::ResourceExhaustedError("out of memory for audio I/O");
    }
    fmt_ = avformat_alloc_context();
    if (fmt_ == nullptr) return absl::ResourceExhaustedError("out of memory for audio demuxing");
    fmt_->pb = avio_;
    fmt_->flags |= AVFMT_FLAG_CUSTOM_IO;
    fmt_->interrupt_callback = {InterruptCallback, &deadline_};
    fmt_->io_open = RefuseIoOpen;
    fmt_->format_whitelist = av_strdup(kFormatWhitelist);
    fmt_->codec_whitelist = av_strdup(kCodecWhitelist);
    fmt_->protocol_whitelist = av_strdup("none");
    last_av_error.clear();
    int ret = avformat_open_input(&fmt_, nullptr, nullptr, nullptr);  // frees fmt_ on failure
    if (ret < 0) {
      if (deadline_.Passed()) return TimeError(field);
      return Invalid(field, absl::StrCat("not a supported audio file (expected WAV, FLAC, MP3, Ogg "
                                         "Vorbis/Opus, M4A/AAC or WebM): ",
                                         AvError(ret)));
    }
    last_av_error.clear();
    ret = avformat_find_stream_info(fmt_, nullptr);
    if (ret < 0) {
      if (deadline_.Passed()) return TimeError(field);
      return Invalid(field, absl::StrCat("cannot read the ", fmt_->iformat->name,
                                         " stream parameters: ", AvError(ret)));
    }
    stream_ = av_find_best_stream(fmt_, AVMEDIA_TYPE_AUDIO, -1, -1, &decoder_, 0);
    if (stream_ == AVERROR_STREAM_NOT_FOUND) {
      return Invalid(field, absl::StrCat("the ", fmt_->iformat->name, " file has no audio stream"));
    }
    if (stream_ < 0 || decoder_ == nullptr) {
      const AVCodecDescriptor* d =
          stream_ >= 0 ? avcodec_descriptor_get(fmt_->streams[stream_]->codecpar->codec_id)
                       : nullptr;
      return Invalid(
          field, absl::StrCat("the ", fmt_->iformat->name, " file's audio codec is not supported",
                              d != nullptr ? absl::StrCat(" (", d->name, ")") : ""));
    }
    if (av_match_list(decoder_->name, kCodecWhitelist, ',') <= 0) {
      return Invalid(field, absl::StrCat("the audio codec ", decoder_->name, " is not supported"));
    }
    return absl::OkStatus();
  }

  absl::Status TimeError(absl::string_view field) const {
    return Invalid(field, absl::StrFormat("decoding took longer than the budget of %g s "
                                          "(audio-decode-seconds); the file may be malformed",
                                          budget_seconds()));
  }
  double budget_seconds() const { return budget_seconds_; }

  AVFormatContext* fmt() const { return fmt_; }
  AVStream* stream() const { return fmt_->streams[stream_]; }
  int stream_index() const { return stream_; }
  const AVCodec* decoder() const { return decoder_; }
  const Deadline& deadline() const { return deadline_; }

 private:
  MemoryReader reader_;
  Deadline deadline_;
  double budget_seconds_;
  AVIOContext* avio_ = nullptr;
  AVFormatContext* fmt_ = nullptr;
  int stream_ = -1;
  const AVCodec* decoder_ = nullptr;
};

std::string LayoutName(const AVChannelLayout& layout) {
  if (layout.order == AV_CHANNEL_ORDER_UNSPEC) return "";
  char buf[128] = {0};
  if (av_channel_layout_describe(&layout, buf, sizeof buf) < 0) return "";
  return buf;
}

absl::Status CheckFormat(int channels, int rate, const AudioLimits& limits,
                         absl::string_view field) {
  if (channels <= 0) return Invalid(field, "the audio stream declares no channels");
  if (channels > limits.max_channels) {
    return Invalid(field, absl::StrFormat("audio has %d channels, more than the limit of %d "
                                          "(max-audio-channels)",
                                          channels, limits.max_channels));
  }
  if (rate < limits.min_sample_rate || rate > limits.max_sample_rate) {
    return Invalid(field, absl::StrFormat("audio sample rate is %d Hz, outside the allowed range "
                                          "%d..%d Hz (min/max-audio-sample-rate)",
                                          rate, limits.min_sample_rate, limits.max_sample_rate));
  }
  return absl::OkStatus();
}

// Opens, probes and checks the header limits; fills `info`.
absl::Status OpenAndCheck(absl::Span<const uint8_t> bytes, const AudioDecodeOptions& options,
                          absl::string_view field, Demuxer* demuxer, AudioInfo* info) {
  MODRWKV_RETURN_IF_ERROR(options.limits.Validate());
  if (options.sample_rate < 1000 || options.sample_rate > 384000) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "audio output sample rate must be in 1000..384000 Hz, got %d", options.sample_rate));
  }
  if (bytes.empty()) return Invalid(field, "audio is empty (0 bytes)");
  if (static_cast<int64_t>(bytes.size()) > options.limits.max_bytes) {
    return Invalid(field, absl::StrFormat("audio is %d bytes, more than the limit of %d "
                                          "(max-audio-bytes)",
                                          bytes.size(), options.limits.max_bytes));
  }
  InitFfmpegLog();
  MODRWKV_RETURN_IF_ERROR(demuxer->Open(field));
  const AVStream* st = demuxer->stream();
  const AVCodecParameters* par = st->codecpar;
  info->container = demuxer->fmt()->iformat->name;
  info->codec = demuxer->decoder()->name;
  info->sample_rate = par->sample_rate;
  info->channels = par->ch_layout.nb_channels;
  info->channel_layout = LayoutName(par->ch_layout);
  if (st->duration != AV_NOPTS_VALUE && st->duration > 0) {
    info->duration_seconds = static_cast<double>(st->duration) * av_q2d(st->time_base);
  } else if (demuxer->fmt()->duration != AV_NOPTS_VALUE && demuxer->fmt()->duration > 0) {
    info->duration_seconds = static_cast<double>(demuxer->fmt()->duration) / AV_TIME_BASE;
  }
  info->duration_estimated =
      demuxer->fmt()->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE;
  MODRWKV_RETURN_IF_ERROR(CheckFormat(info->channels, info->sample_rate, options.limits, field));
  if (info->duration_seconds > options.limits.max_seconds) {
    return Invalid(field, absl::StrFormat("audio is %.2f s long (from the header), more than the "
                                          "limit of %g s (max-audio-seconds)",
                                          info->duration_seconds, options.limits.max_seconds));
  }
  return absl::OkStatus();
}

// Converts decoded frames to mono float32 at the output rate; rebuilt when the input format
// changes mid-stream (allowed by some containers: chained Ogg, MP3 with changing rates).
class MonoConverter {
 public:
  explicit MonoConverter(int out_rate) : out_rate_(out_rate) {}

  absl::Status Convert(const AVFrame* frame, std::vector<float>* out, absl::string_view field) {
    const auto fmt = static_cast<AVSampleFormat>(frame->format);
    if (swr_ == nullptr || fmt != in_fmt_ || frame->sample_rate != in_rate_ ||
        av_channel_layout_compare(&frame->ch_layout, &in_layout_) != 0) {
      MODRWKV_RETURN_IF_ERROR(Flush(out));
      MODRWKV_RETURN_IF_ERROR(Reset(frame, field));
    }
    return Run(frame->extended_data, frame->nb_samples, out, field);
  }

  // Drains the resampler's delay line at the end of the stream.
  absl::Status Flush(std::vector<float>* out) {
    if (swr_ == nullptr) return absl::OkStatus();
    return Run(nullptr, 0, out, "");
  }

  ~MonoConverter() { av_channel_layout_uninit(&in_layout_); }

 private:
  absl::Status Reset(const AVFrame* frame, absl::string_view field) {
    swr_.reset();
    av_channel_layout_uninit(&in_layout_);
    if (av_channel_layout_copy(&in_layout_, &frame->ch_layout) < 0) {
      return absl::ResourceExhaustedError("out of memory for a channel layout");
    }
    in_fmt_ = static_cast<AVSampleFormat>(frame->format);
    in_rate_ = frame->sample_rate;
    const int channels = frame->ch_layout.nb_channels;
    // A layout the file does not specify: mono, stereo, or an equal-weight mean (audio_decode.h).
    AVChannelLayout swr_in{};
    const bool unspecified = frame->ch_layout.order != AV_CHANNEL_ORDER_NATIVE;
    if (unspecified) {
      av_channel_layout_default(&swr_in, channels);
    } else {
      av_channel_layout_copy(&swr_in, &frame->ch_layout);
    }
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    SwrContext* raw = nullptr;
    int ret = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, out_rate_, &swr_in, in_fmt_,
                                  in_rate_, 0, nullptr);
    av_channel_layout_uninit(&swr_in);
    if (ret < 0 || raw == nullptr) {
      return Invalid(field, absl::StrCat("cannot convert this audio format: ", AvError(ret)));
    }
    swr_.reset(raw);
    // Normalise the downmix matrix so that the mono output stays in the inputs' range (for float
    // output libswresample would otherwise sum stereo as 0.707 L + 0.707 R).
    av_opt_set_double(raw, "rematrix_maxval", 1.0, 0);
    if (unspecified && channels > 2) {
      std::vector<double> matrix(static_cast<size_t>(channels), 1.0 / channels);
      ret = swr_set_matrix(raw, matrix.data(), channels);
      if (ret < 0) {
        return Invalid(field,
                       absl::StrCat("cannot downmix ", channels, " channels: ", AvError(ret)));
      }
    }
    ret = swr_init(raw);
    if (ret < 0) {
      return Invalid(field,
                     absl::StrFormat("cannot convert %d-channel %s audio at %d Hz: %s", channels,
                                     av_get_sample_fmt_name(in_fmt_), in_rate_, AvError(ret)));
    }
    return absl::OkStatus();
  }

  absl::Status Run(const uint8_t* const* in, int in_samples, std::vector<float>* out,
                   absl::string_view field) {
    const int capacity = swr_get_out_samples(swr_.get(), in_samples);
    if (capacity < 0) return Invalid(field, "audio resampler failed");
    const size_t old = out->size();
    out->resize(old + static_cast<size_t>(capacity));
    auto* dst = reinterpret_cast<uint8_t*>(out->data() + old);
    const int n =
        swr_convert(swr_.get(), &dst, capacity, const_cast<const uint8_t**>(in), in_samples);
    if (n < 0) {
      out->resize(old);
      return Invalid(field, absl::StrCat("audio resampler failed: ", AvError(n)));
    }
    out->resize(old + static_cast<size_t>(n));
    return absl::OkStatus();
  }

  int out_rate_;
  std::unique_ptr<SwrContext, SwrFree> swr_;
  AVSampleFormat in_fmt_ = AV_SAMPLE_FMT_NONE;
  int in_rate_ = 0;
  AVChannelLayout in_layout_{};
};

// A WAV file's PCM has no framing to check, so a cut is visible only against the data chunk's
// declared size (FFmpeg takes the file's size instead). Returns the bytes missing, 0 when the
// file is whole or not a plain RIFF WAVE (streamed WAVs declare 0 or 0xFFFFFFFF).
int64_t WavBytesMissing(absl::Span<const uint8_t> bytes) {
  auto u32 = [&](size_t at) {
    return static_cast<uint32_t>(bytes[at]) | static_cast<uint32_t>(bytes[at + 1]) << 8 |
           static_cast<uint32_t>(bytes[at + 2]) << 16 | static_cast<uint32_t>(bytes[at + 3]) << 24;
  };
  if (bytes.size() < 12 || std::memcmp(bytes.data(), "RIFF", 4) != 0 ||
      std::memcmp(bytes.data() + 8, "WAVE", 4) != 0) {
    return 0;
  }
  size_t pos = 12;
  while (pos + 8 <= bytes.size()) {
    const uint32_t size = u32(pos + 4);
    if (std::memcmp(bytes.data() + pos, "data", 4) == 0) {
      if (size == 0 || size == 0xFFFFFFFFu) return 0;
      const int64_t available = static_cast<int64_t>(bytes.size() - pos - 8);
      return std::max<int64_t>(0, int64_t{size} - available);
    }
    pos += 8 + size + (size & 1);  // chunks are padded to even sizes
  }
  return 0;
}

}  // namespace

absl::Status AudioLimits::Validate() const {
  if (max_bytes <= 0 || !(max_seconds > 0) || max_channels <= 0 || min_sample_rate <= 0 ||
      max_sample_rate < min_sample_rate || max_packets <= 0 || !(time_budget_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "audio limits must be positive (and min <= max sample rate), got max-audio-bytes %d, "
        "max-audio-seconds %g, max-audio-channels %d, audio sample rates %d..%d, "
        "max-audio-packets %d, audio-decode-seconds %g",
        max_bytes, max_seconds, max_channels, min_sample_rate, max_sample_rate, max_packets,
        time_budget_seconds));
  }
  return absl::OkStatus();
}

absl::StatusOr<AudioInfo> ProbeAudio(absl::Span<const uint8_t> bytes,
                                     const AudioDecodeOptions& options, absl::string_view field) {
  Demuxer demuxer(bytes, options.limits.time_budget_seconds);
  AudioInfo info;
  MODRWKV_RETURN_IF_ERROR(OpenAndCheck(bytes, options, field, &demuxer, &info));
  return info;
}

absl::StatusOr<std::vector<float>> DecodeAudio(absl::Span<const uint8_t> bytes,
                                               const AudioDecodeOptions& options,
                                               absl::string_view field) {
  const AudioLimits& limits = options.limits;
  Demuxer demuxer(bytes, limits.time_budget_seconds);
  AudioInfo info;
  MODRWKV_RETURN_IF_ERROR(OpenAndCheck(bytes, options, field, &demuxer, &info));

  std::unique_ptr<AVCodecContext, CodecCtxFree> codec(avcodec_alloc_context3(demuxer.decoder()));
  std::unique_ptr<AVPacket, PacketFree> packet(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  if (codec == nullptr || packet == nullptr || frame == nullptr) {
    return absl::ResourceExhaustedError("out of memory for audio decoding");
  }
  int ret = avcodec_parameters_to_context(codec.get(), demuxer.stream()->codecpar);
  if (ret < 0) return Invalid(field, absl::StrCat("bad codec parameters: ", AvError(ret)));
  codec->thread_count = 1;  // the encoder pool owns the parallelism
  codec->pkt_timebase = demuxer.stream()->time_base;
  // No error concealment: a damaged packet fails the request instead of feeding the model
  // silence or noise. FLAC and MP3 frames with a CRC are checked.
  codec->err_recognition = AV_EF_EXPLODE | AV_EF_CRCCHECK;
  codec->codec_whitelist = av_strdup(kCodecWhitelist);
  last_av_error.clear();
  ret = avcodec_open2(codec.get(), demuxer.decoder(), nullptr);
  if (ret < 0) {
    return Invalid(field, absl::StrCat("cannot open the ", info.codec, " decoder: ", AvError(ret)));
  }

  std::vector<float> out;
  const int64_t max_out_samples =
      static_cast<int64_t>(std::ceil(limits.max_seconds * options.sample_rate)) + 64;
  out.reserve(static_cast<size_t>(std::min<double>(
      max_out_samples, info.duration_seconds > 0
                           ? std::ceil(info.duration_seconds * options.sample_rate) + 1024
                           : options.sample_rate * 10.0)));
  MonoConverter converter(options.sample_rate);
  double decoded_seconds = 0;  // input-side duration of the frames decoded so far
  int64_t packets = 0;

  // Receives every frame the decoder has ready.
  auto drain = [&]() -> absl::Status {
    while (true) {
      ret = avcodec_receive_frame(codec.get(), frame.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return absl::OkStatus();
      if (ret < 0) {
        return Invalid(field, absl::StrFormat("corrupt %s data after %.2f s: %s", info.codec,
                                              decoded_seconds, AvError(ret)));
      }
      MODRWKV_RETURN_IF_ERROR(
          CheckFormat(frame->ch_layout.nb_channels, frame->sample_rate, limits, field));
      decoded_seconds += static_cast<double>(frame->nb_samples) / frame->sample_rate;
      // 1 ms of slack for the rounding of summed frame durations (60 s of 4096-sample frames).
      if (decoded_seconds > limits.max_seconds + 1e-3) {
        return Invalid(field, absl::StrFormat("audio is longer than the limit of %g s "
                                              "(max-audio-seconds)%s",
                                              limits.max_seconds,
                                              info.duration_seconds > 0
                                                  ? absl::StrFormat(", although its header says "
                                                                    "%.2f s",
                                                                    info.duration_seconds)
                                                  : ""));
      }
      MODRWKV_RETURN_IF_ERROR(converter.Convert(frame.get(), &out, field));
      av_frame_unref(frame.get());
      if (static_cast<int64_t>(out.size()) > max_out_samples) {
        return Invalid(field, absl::StrFormat("audio is longer than the limit of %g s "
                                              "(max-audio-seconds)",
                                              limits.max_seconds));
      }
    }
  };

  while (true) {
    if (demuxer.deadline().Passed()) return demuxer.TimeError(field);
    last_av_error.clear();
    ret = av_read_frame(demuxer.fmt(), packet.get());
    if (ret == AVERROR_EOF) break;
    if (ret == AVERROR_EXIT || demuxer.deadline().Passed()) return demuxer.TimeError(field);
    if (ret < 0) {
      return Invalid(field, absl::StrFormat("cannot read the %s data after %.2f s: %s",
                                            info.container, decoded_seconds, AvError(ret)));
    }
    if (++packets > limits.max_packets) {
      av_packet_unref(packet.get());
      return Invalid(field, absl::StrFormat("audio has more than %d packets (max-audio-packets)",
                                            limits.max_packets));
    }
    if (packet->stream_index != demuxer.stream_index()) {
      av_packet_unref(packet.get());
      continue;
    }
    ret = avcodec_send_packet(codec.get(), packet.get());
    av_packet_unref(packet.get());
    if (ret < 0 && ret != AVERROR(EAGAIN)) {
      return Invalid(field, absl::StrFormat("corrupt %s data after %.2f s: %s", info.codec,
                                            decoded_seconds, AvError(ret)));
    }
    MODRWKV_RETURN_IF_ERROR(drain());
  }
  ret = avcodec_send_packet(codec.get(), nullptr);  // flush the decoder's delayed frames
  if (ret < 0 && ret != AVERROR_EOF) {
    return Invalid(field,
                   absl::StrCat("cannot flush the ", info.codec, " decoder: ", AvError(ret)));
  }
  MODRWKV_RETURN_IF_ERROR(drain());
  MODRWKV_RETURN_IF_ERROR(converter.Flush(&out));

  if (out.empty()) return Invalid(field, "audio contains no samples");
  // Float formats (WAV f32/f64) can carry anything: NaN or infinity is refused; values beyond
  // kMaxSample are clipped so that the front ends' float32 FFT cannot overflow. Values a little
  // beyond full scale are kept: lossy decoders overshoot, and the official loaders keep them.
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      return Invalid(field, absl::StrFormat("audio has a non-finite sample (NaN or infinity) at "
                                            "%.3f s",
                                            static_cast<double>(i) / options.sample_rate));
    }
    out[i] = std::clamp(out[i], -kMaxSample, kMaxSample);
  }
  if (info.container == "wav") {
    if (const int64_t missing = WavBytesMissing(bytes); missing > 0) {
      return Invalid(field, absl::StrFormat("audio is truncated: the WAV data chunk declares %d "
                                            "more bytes than the file holds",
                                            missing));
    }
  }
  // Truncation: clearly less audio than the header promised. A bit-rate estimate (CBR MP3
  // without a Xing header) is not a promise; tolerances cover encoder delay and padding.
  if (info.duration_seconds > 0 && !info.duration_estimated &&
      decoded_seconds < info.duration_seconds - (0.1 + 0.01 * info.duration_seconds)) {
    return Invalid(field, absl::StrFormat("audio is truncated or corrupt: the header says %.2f s, "
                                          "%.2f s could be decoded",
                                          info.duration_seconds, decoded_seconds));
  }
  return out;
}

}  // namespace modrwkv::encoders

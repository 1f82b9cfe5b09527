// Whisper log-mel features with FFTW (see whisper_features.h). The formulas are those of
// transformers' audio_utils.mel_filter_bank /
// WhisperFeatureExtractor._torch_extract_fbank_features.
#include "encoders/audio/whisper_features.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace modrwkv::encoders {
namespace {

using nlohmann::json;

// FFTW's planner (and fftwf_destroy_plan) are not thread-safe; fftwf_execute_* on a made plan is.
std::mutex& FftwPlannerMutex() {
  static std::mutex* const mu = new std::mutex;
  return *mu;
}

struct FftwFree {
  void operator()(void* p) const { fftwf_free(p); }
};
using RealBuf = std::unique_ptr<float[], FftwFree>;
using ComplexBuf = std::unique_ptr<fftwf_complex[], FftwFree>;

// Slaney's mel scale: linear below 1 kHz, logarithmic above.
double HzToMel(double hz) {
  constexpr double kMinLogHz = 1000.0, kMinLogMel = 15.0;
  const double logstep = 27.0 / std::log(6.4);
  if (hz >= kMinLogHz) return kMinLogMel + std::log(hz / kMinLogHz) * logstep;
  return 3.0 * hz / 200.0;
}

double MelToHz(double mel) {
  constexpr double kMinLogHz = 1000.0, kMinLogMel = 15.0;
  const double logstep = std::log(6.4) / 27.0;
  if (mel >= kMinLogMel) return kMinLogHz * std::exp(logstep * (mel - kMinLogMel));
  return 200.0 * mel / 3.0;
}

// numpy.linspace(start, stop, num) as numpy computes it (step = (stop - start) / (num - 1),
// start + i * step, the last value set to stop exactly).
std::vector<double> Linspace(double start, double stop, int num) {
  std::vector<double> v(static_cast<size_t>(num));
  const double step = num > 1 ? (stop - start) / (num - 1) : 0.0;
  for (int i = 0; i < num; ++i) v[i] = start + i * step;
  if (num > 1) v[num - 1] = stop;
  return v;
}

absl::Status ReadInt(const json& j, const char* key, int lo, int hi, int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
    return absl::InvalidArgumentError(absl::StrCat("preprocessor_config.json: \"", key, "\" is ",
                                                   it->dump(), ", expected an integer in ", lo,
                                                   "..", hi));
  }
  *out = static_cast<int>(it->get<int64_t>());
  return absl::OkStatus();
}

}  // namespace

absl::Status WhisperFeatureConfig::Validate() const {
  if (feature_size < 1 || feature_size > 512 || sampling_rate < 1000 || sampling_rate > 192000 ||
      hop_length < 1 || n_fft < 2 || n_fft > 65536 || n_fft % 2 != 0 || chunk_length < 1 ||
      chunk_length > 600 || !std::isfinite(padding_value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Whisper front end: invalid config (feature_size ", feature_size, ", sampling_rate ",
        sampling_rate, ", hop_length ", hop_length, ", n_fft ", n_fft, " (even), chunk_length ",
        chunk_length, ", padding_value ", padding_value, ")"));
  }
  if (n_samples() <= n_fft / 2 || num_frames() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Whisper front end: chunk_length * sampling_rate = ", n_samples(),
        " samples, expected more than n_fft / 2 = ", n_fft / 2, " and at least one hop"));
  }
  return absl::OkStatus();
}

absl::StatusOr<WhisperFeatureConfig> WhisperFeatureConfig::FromJson(absl::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("preprocessor_config.json is not a JSON object");
  }
  auto type = j.find("feature_extractor_type");
  if (type != j.end() && type->is_string() &&
      type->get<std::string>() != "WhisperFeatureExtractor") {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocessor_config.json: \"feature_extractor_type\" is ", type->dump(),
                     ", expected \"WhisperFeatureExtractor\""));
  }
  WhisperFeatureConfig cfg;
  MODRWKV_RETURN_IF_ERROR(ReadInt(j, "feature_size", 1, 512, &cfg.feature_size));
  MODRWKV_RETURN_IF_ERROR(ReadInt(j, "sampling_rate", 1000, 192000, &cfg.sampling_rate));
  MODRWKV_RETURN_IF_ERROR(ReadInt(j, "hop_length", 1, 65536, &cfg.hop_length));
  MODRWKV_RETURN_IF_ERROR(ReadInt(j, "chunk_length", 1, 600, &cfg.chunk_length));
  MODRWKV_RETURN_IF_ERROR(ReadInt(j, "n_fft", 2, 65536, &cfg.n_fft));
  auto pad = j.find("padding_value");
  if (pad != j.end() && !pad->is_null()) {
    if (!pad->is_number()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocessor_config.json: \"padding_value\" is ", pad->dump(), ", expected a number"));
    }
    cfg.padding_value = static_cast<float>(pad->get<double>());
  }
  MODRWKV_RETURN_IF_ERROR(cfg.Validate());
  return cfg;
}

absl::StatusOr<WhisperFeatureConfig> WhisperFeatureConfig::FromFolder(const std::string& dir) {
  const std::string path = dir + "/preprocessor_config.json";
  if (!std::filesystem::exists(path)) return WhisperFeatureConfig{};
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto cfg = FromJson(text);
  if (!cfg.ok()) {
    return absl::Status(cfg.status().code(), absl::StrCat(path, ": ", cfg.status().message()));
  }
  return cfg;
}

absl::StatusOr<std::unique_ptr<WhisperFrontEnd>> WhisperFrontEnd::Create(
    const WhisperFeatureConfig& config) {
  MODRWKV_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<WhisperFrontEnd> fe(new WhisperFrontEnd());
  fe->config_ = config;
  const int n_fft = config.n_fft;
  const int n_freq = n_fft / 2 + 1;
  const int n_mels = config.feature_size;

  // Periodic Hann window (torch.hann_window's default).
  fe->window_.resize(static_cast<size_t>(n_fft));
  for (int i = 0; i < n_fft; ++i) {
    fe->window_[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * M_PI * i / n_fft));
  }

  // mel_filter_bank(num_frequency_bins=n_freq, num_mel_filters=n_mels, min_frequency=0,
  // max_frequency=8000, sampling_rate, norm="slaney", mel_scale="slaney"), in float64.
  const std::vector<double> mel_points = Linspace(HzToMel(0.0), HzToMel(8000.0), n_mels + 2);
  std::vector<double> filter_hz(mel_points.size());
  for (size_t i = 0; i < mel_points.size(); ++i) filter_hz[i] = MelToHz(mel_points[i]);
  // Integer division as transformers writes it: sampling_rate // 2.
  const std::vector<double> fft_hz = Linspace(0.0, config.sampling_rate / 2, n_freq);
  fe->mel_filters_.assign(static_cast<size_t>(n_freq) * n_mels, 0.0f);
  fe->mel_begin_.assign(static_cast<size_t>(n_mels), n_freq);
  fe->mel_end_.assign(static_cast<size_t>(n_mels), 0);
  for (int m = 0; m < n_mels; ++m) {
    const double lower = filter_hz[m + 1] - filter_hz[m];
    const double upper = filter_hz[m + 2] - filter_hz[m + 1];
    const double enorm = 2.0 / (filter_hz[m + 2] - filter_hz[m]);
    for (int f = 0; f < n_freq; ++f) {
      const double down = -(filter_hz[m] - fft_hz[f]) / lower;
      const double up = (filter_hz[m + 2] - fft_hz[f]) / upper;
      const double w = std::max(0.0, std::min(down, up)) * enorm;
      fe->mel_filters_[static_cast<size_t>(f) * n_mels + m] = static_cast<float>(w);
      if (w != 0.0) {
        fe->mel_begin_[m] = std::min(fe->mel_begin_[m], f);
        fe->mel_end_[m] = std::max(fe->mel_end_[m], f + 1);
      }
    }
    if (fe->mel_end_[m] == 0) fe->mel_begin_[m] = 0;  // an empty filter (too many mel bins)
  }

  {
    std::lock_guard<std::mutex> lock(FftwPlannerMutex());
    RealBuf in(fftwf_alloc_real(static_cast<size_t>(n_fft)));
    ComplexBuf out(fftwf_alloc_complex(static_cast<size_t>(n_freq)));
    if (in == nullptr || out == nullptr) {
      return absl::ResourceExhaustedError("out of memory for the FFT plan");
    }
    // FFTW_ESTIMATE: planning must not time the machine at start-up (and leaves `in` alone).
    fe->plan_ = fftwf_plan_dft_r2c_1d(n_fft, in.get(), out.get(), FFTW_ESTIMATE);
  }
  if (fe->plan_ == nullptr) {
    return absl::InternalError(absl::StrCat("FFTW could not plan a real FFT of size ", n_fft));
  }
  return fe;
}

WhisperFrontEnd::~WhisperFrontEnd() {
  if (plan_ != nullptr) {
    std::lock_guard<std::mutex> lock(FftwPlannerMutex());
    fftwf_destroy_plan(static_cast<fftwf_plan>(plan_));
  }
}

WhisperFeatures WhisperFrontEnd::Compute(absl::Span<const float> samples) const {
  const WhisperFeatureConfig& c = config_;
  const int n_fft = c.n_fft;
  const int half = n_fft / 2;
  const int n_freq = half + 1;
  const int n_mels = c.feature_size;
  const int n_samples = c.n_samples();
  const int frames = c.num_frames();
  const int used = static_cast<int>(std::min<size_t>(samples.size(), n_samples));

  // The padded / trimmed clip with the centre's reflect padding on both sides.
  std::vector<float> x(static_cast<size_t>(n_samples) + 2 * half, c.padding_value);
  std::copy(samples.begin(), samples.begin() + used, x.begin() + half);
  for (int i = 1; i <= half; ++i) {
    x[half - i] = x[half + i];
    x[half + n_samples - 1 + i] = x[half + n_samples - 1 - i];
  }

  WhisperFeatures out;
  out.num_mels = n_mels;
  out.num_frames = frames;
  out.valid_frames = (used + c.hop_length - 1) / c.hop_length;
  out.values.resize(static_cast<size_t>(n_mels) * frames);

  // Arrays allocated like the plan's, so that their alignment matches (fftwf_execute_dft_r2c's
  // requirement for new arrays).
  RealBuf in(fftwf_alloc_real(static_cast<size_t>(n_fft)));
  ComplexBuf spec(fftwf_alloc_complex(static_cast<size_t>(n_freq)));
  std::vector<float> power(static_cast<size_t>(n_freq));
  const auto plan = static_cast<fftwf_plan>(plan_);
  float max_log = -std::numeric_limits<float>::infinity();
  for (int t = 0; t < frames; ++t) {
    const float* frame = x.data() + static_cast<size_t>(t) * c.hop_length;
    for (int i = 0; i < n_fft; ++i) in[i] = frame[i] * window_[i];
    fftwf_execute_dft_r2c(plan, in.get(), spec.get());
    for (int f = 0; f < n_freq; ++f) {
      power[f] = spec[f][0] * spec[f][0] + spec[f][1] * spec[f][1];
    }
    for (int m = 0; m < n_mels; ++m) {
      double acc = 0.0;
      for (int f = mel_begin_[m]; f < mel_end_[m]; ++f) {
        acc += static_cast<double>(mel_filters_[static_cast<size_t>(f) * n_mels + m]) * power[f];
      }
      const float v = std::log10(std::max(static_cast<float>(acc), 1e-10f));
      out.values[static_cast<size_t>(m) * frames + t] = v;
      max_log = std::max(max_log, v);
    }
  }
  const float floor = max_log - 8.0f;
  for (float& v : out.values) v = (std::max(v, floor) + 4.0f) / 4.0f;
  return out;
}

}  // namespace modrwkv::encoders

// Opens what a user downloaded — a bare checkpoint plus an encoder folder, or a model directory
// with a manifest — into the language model and, when the checkpoint has an adapter, the vision
// or audio pipeline, spliced as the checkpoint's generation says, or (with the manifest's
// "time_series") the time-series encoder and head (docs/models.md).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "encoders/adapter/checkpoint_layout.h"
#include "encoders/multimodal/audio_pipeline.h"
#include "encoders/multimodal/manifest.h"
#include "encoders/multimodal/vision_pipeline.h"
#include "encoders/timeseries/timeseries_model.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/initial_state.h"
#include "engine/model/model.h"
#include "engine/text/tokenizer.h"

namespace modrwkv::encoders {

struct BundleOptions {
  std::string model;                // a checkpoint file, or a directory holding kManifestName
  std::string vision_encoder;       // encoder folder; overrides the manifest's
  std::string audio_encoder;        // Whisper or WavLM folder; overrides the manifest's
  DecodeOptions decode;             // image limits and EXIF handling
  AudioDecodeOptions audio_decode;  // audio limits (max_seconds is capped at the encoder's window)
  // With the language model on a GPU the encoders and adapters run there too; their f32 products
  // may then use TF32 tensor cores (encoders/cuda/encoder_device.h, EncoderMath::kTf32: inputs
  // rounded to 10 mantissa bits, several times the rate). Off: plain f32, the CPU's results up to
  // the order of sums. Ignored on a CPU.
  bool encoder_tf32 = false;
};

// Where a request's image rows go and which tokens surround them.
struct ImageSplice {
  SpliceMode mode = SpliceMode::kPrepend;
  int rows = 0;              // rows per image (after the adapter)
  int32_t start_token = -1;  // kReplacePad: before the rows (-1 = none)
  int32_t end_token = -1;    // kReplacePad: after the rows (-1 = none)
};

struct ModelBundle {
  ModelManifest manifest;  // read from the directory, or made up for a bare checkpoint
  CheckpointLayout layout;
  std::unique_ptr<Model> model;
  std::shared_ptr<const VisionPipeline> vision;  // null: no images
  std::shared_ptr<const AudioPipeline> audio;    // null: no audio
  // A time-series model (the manifest's "time_series"): its encoder and forecasting head.
  std::shared_ptr<const TimeSeriesPipeline> series;  // null: no forecasting
  std::vector<int32_t> series_prompt;                // the manifest's time_series.prompt, tokenized
  ImageSplice image_splice;
  // The trained initial state the language model's checkpoint carries (RWKV-PEFT's
  // merge_state.py writes blocks.{i}.att.time_state beside the weights), named "model"; null
  // when it has none.
  std::shared_ptr<const InitialState> initial_state;
  // Why a checkpoint with an adapter is served text-only ("" when not the case).
  std::string encoder_missing;
};

// The vocabulary the bundle names (manifest "vocab"), or "" to let the caller decide.
std::string BundleVocabPath(const BundleOptions& options);

// `tokenizer` resolves the manifest's special-token names (generation B/C); may be null.
absl::StatusOr<ModelBundle> OpenModelBundle(const BundleOptions& options,
                                            const ModelOptions& model_options,
                                            const CheckpointOptions& checkpoint_options,
                                            const Tokenizer* tokenizer);

}  // namespace modrwkv::encoders

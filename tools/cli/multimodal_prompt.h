// Prompts of the CLI's model commands: token rows around an optional image, spliced as the
// checkpoint's generation says, and their prefill on one slot.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/multimodal/model_bundle.h"
#include "engine/model/model.h"
#include "engine/serving/scheduler.h"

namespace modrwkv::cli {

// A media file for the prompt: "image" or "audio" and its path ("" path = none).
struct MediaFile {
  std::string kind;
  std::string path;
};

// `before` + the media's rows (an image with generation B's marker tokens around it; an audio
// clip bare) + `after`. Without media: `before` + `after`. `threads` for the encoder.
absl::StatusOr<std::vector<InputRows>> BuildPrompt(const encoders::ModelBundle& bundle,
                                                   std::vector<int32_t> before,
                                                   std::vector<int32_t> after,
                                                   const MediaFile& media, int threads);

// Runs `prompt` on `entry->slot` in chunks; the last chunk asks for `last` (kLogits or kSample).
absl::Status Prefill(Model& model, const std::vector<InputRows>& prompt, StepOutput last,
                     StepEntry* entry, std::vector<StepResult>* results);

int64_t PromptRows(const std::vector<InputRows>& prompt, int n_embd);

}  // namespace modrwkv::cli

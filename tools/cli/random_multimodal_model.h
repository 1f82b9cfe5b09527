// Random-weight generation-A vision and speech models of real shapes, for benchmarks and smoke
// tests without a download: adapter tensors added to an RWKV7 checkpoint's tensors, and a Hugging
// Face layout encoder folder (SigLIP: config.json, model.safetensors, preprocessor_config.json;
// Whisper: config.json, model.safetensors, the front end's defaults).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/checkpoint/checkpoint.h"

namespace modrwkv::cli {

// "siglip2-base" (google/siglip2-base-patch16-384's vision tower: 384 px, patch 16, 768 wide,
// 12 layers) or "tiny" (64 px, patch 16, 96 wide, 3 layers: 16 rows per image).
absl::Status CheckVisionShape(const std::string& shape);

// Appends generation A's adapter (modality.world_encoder.adapter.{proj.0, proj.2, pre_norm}:
// encoder width -> 2C -> C, then y + LayerNorm(y)) for a language model of width n_embd.
void AddRandomVisionAdapter(const std::string& shape, int n_embd, uint64_t seed,
                            std::vector<OwnedTensor>* tensors);

// Writes the encoder folder `dir` (created) and, next to it, nothing else.
absl::Status WriteRandomVisionEncoder(const std::string& shape, uint64_t seed,
                                      const std::string& dir);

// "whisper-small" (openai/whisper-small's encoder: 768 wide, 12 layers, 12 heads) or "tiny"
// (64 wide, 2 layers, 2 heads); both 80 mel bins and the full 1500-frame window.
absl::Status CheckAudioShape(const std::string& shape);

// Appends generation A's speech adapter (modality.world_encoder.adapter.{conv, proj.0, proj.2}:
// Conv1d(encoder width, 2C, k3, s2) -> Linear(2C, 2C) -> ReLU -> Linear(2C, C)).
void AddRandomSpeechAdapter(const std::string& shape, int n_embd, uint64_t seed,
                            std::vector<OwnedTensor>* tensors);

// Writes the Whisper encoder folder `dir` (created).
absl::Status WriteRandomAudioEncoder(const std::string& shape, uint64_t seed,
                                     const std::string& dir);

// A random time-series model in this project's format (docs/models.md, "Time series"), the
// assets/ts-demo shape: 1 channel, patch 4, WaveNet width 32 with dilations 1,2,4,8,1,2,4,8, the
// 4x adapter (32 -> 128 -> n_embd) and a 12-step head. Appends the modality.ts_* tensors.
// With encoder "timer": timer-base-84m's Timer shape instead of the WaveNet (patch 96, width
// 1024, 8 layers, 8 heads, FFN 2048; adapter 1024 -> 4096 -> n_embd); "timer-tiny": a Timer of
// patch 8, width 32, 2 layers, 4 heads over 2 channels (for tests).
void AddRandomTimeSeriesModel(int n_embd, uint64_t seed, std::vector<OwnedTensor>* tensors,
                              const std::string& encoder = "wavenet");
// Whether `encoder` names one of those: wavenet, timer, timer-tiny.
bool IsRandomSeriesEncoder(const std::string& encoder);
// Its manifest section (max_length as given).
std::string RandomTimeSeriesManifest(int max_length, const std::string& encoder = "wavenet");

}  // namespace modrwkv::cli

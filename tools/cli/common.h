// Pieces shared by the CLI subcommands: model/tokenizer loading from flags, id lists, errors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/multimodal/model_bundle.h"
#include "engine/checkpoint/checkpoint.h"
#include "engine/model/model.h"
#include "engine/text/tokenizer.h"
#include "tools/cli/flags.h"

namespace modrwkv::cli {

// Subcommands return a process exit code: 0 ok, 1 runtime failure, 2 usage error.
int Fail(const absl::Status& status);
int UsageError(const Flags& flags, const absl::Status& status);

// Adds --model, --dtype, --threads and the checkpoint flags (AddCheckpointFlags).
void AddModelFlags(Flags& flags);
absl::StatusOr<ModelOptions> ModelOptionsFromFlags(const Flags& flags, int num_slots);
// A --dtype value: auto, f32 (fp32), bf16, int8, int4, f16 (fp16).
absl::StatusOr<ModelOptions::WeightType> ParseWeightType(const std::string& dtype);
// Adds --[no-]verify-checksums.
void AddCheckpointFlags(Flags& flags);
CheckpointOptions CheckpointOptionsFromFlags(const Flags& flags);
absl::StatusOr<std::unique_ptr<Model>> LoadModelFromFlags(const Flags& flags, int num_slots);
// --model (file or model directory) and --vision-encoder: the language model and, for a ModRWKV
// checkpoint with an encoder, its vision pipeline. `tokenizer` names generation-B marker tokens.
absl::StatusOr<encoders::ModelBundle> LoadBundleFromFlags(const Flags& flags, int num_slots,
                                                          const Tokenizer* tokenizer);
// --vocab, else the model manifest's, else next to the model (or in its directory), else the
// bundled copy.
std::string ResolveVocabPath(const std::string& vocab_flag, const std::string& model_path);

// The vocabulary: --vocab if given, else rwkv_vocab_v20230424.txt next to the model, else the
// copy installed with the binary.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& vocab_flag,
                                                         const std::string& model_path);
std::string DefaultVocabPath();

// "1 2 3" or "1,2,3" -> ids; errors name the bad entry.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const char* flag);

// Reads a whole file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace modrwkv::cli

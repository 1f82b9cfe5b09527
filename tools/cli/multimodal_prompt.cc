#include "tools/cli/multimodal_prompt.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::cli {
namespace {

constexpr int64_t kChunkRows = 256;

}  // namespace

absl::StatusOr<std::vector<InputRows>> BuildPrompt(const encoders::ModelBundle& bundle,
                                                   std::vector<int32_t> before,
                                                   std::vector<int32_t> after,
                                                   const MediaFile& media, int threads) {
  std::vector<InputRows> parts;
  if (!before.empty()) parts.push_back(InputRows{std::move(before), {}});
  if (!media.path.empty()) {
    const std::string flag = "--" + media.kind;
    const bool image = media.kind == "image";
    if (image ? !bundle.vision : !bundle.audio) {
      return absl::FailedPreconditionError(
          !bundle.encoder_missing.empty()
              ? absl::StrCat(flag, ": ", bundle.encoder_missing)
              : absl::StrCat(flag, ": this model has no ", image ? "vision" : "audio", " encoder"));
    }
    std::ifstream in(media.path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", media.path));
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string bytes = ss.str();
    const auto span =
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    cpu::ThreadPool pool(threads);
    if (image) {
      MODRWKV_ASSIGN_OR_RETURN(encoders::EmbeddingRows rows,
                               bundle.vision->EncodeImage(span, flag, &pool));
      const encoders::ImageSplice& sp = bundle.image_splice;
      const bool marked = sp.mode == encoders::SpliceMode::kReplacePad;
      if (marked && sp.start_token >= 0) parts.push_back(InputRows{{sp.start_token}, {}});
      parts.push_back(InputRows{{}, std::move(rows.data)});
      if (marked && sp.end_token >= 0) parts.push_back(InputRows{{sp.end_token}, {}});
    } else {
      MODRWKV_ASSIGN_OR_RETURN(encoders::EmbeddingRows rows,
                               bundle.audio->EncodeClip(span, flag, &pool));
      parts.push_back(InputRows{{}, std::move(rows.data)});
    }
  }
  if (!after.empty()) parts.push_back(InputRows{std::move(after), {}});
  if (parts.empty()) return absl::InvalidArgumentError("the prompt is empty");
  return parts;
}

absl::Status Prefill(Model& model, const std::vector<InputRows>& prompt, StepOutput last,
                     StepEntry* entry, std::vector<StepResult>* results) {
  const int n_embd = model.config().n_embd;
  for (size_t p = 0; p < prompt.size(); ++p) {
    const InputRows& part = prompt[p];
    const int64_t rows = static_cast<int64_t>(part.tokens.size() + part.embeddings.size() / n_embd);
    for (int64_t at = 0; at < rows; at += kChunkRows) {
      const int64_t n = std::min(kChunkRows, rows - at);
      entry->inputs.clear();
      if (!part.tokens.empty()) {
        entry->inputs.push_back(
            InputRowsView::Tokens(absl::MakeConstSpan(part.tokens).subspan(at, n)));
      } else {
        entry->inputs.push_back(InputRowsView::Embeddings(
            absl::MakeConstSpan(part.embeddings).subspan(at * n_embd, n * n_embd)));
      }
      const bool final = p + 1 == prompt.size() && at + n == rows;
      entry->output = final ? last : StepOutput::kNone;
      MODRWKV_RETURN_IF_ERROR(model.Step({*entry}, results));
    }
  }
  return absl::OkStatus();
}

int64_t PromptRows(const std::vector<InputRows>& prompt, int n_embd) {
  int64_t n = 0;
  for (const InputRows& p : prompt) n += p.tokens.size() + p.embeddings.size() / n_embd;
  return n;
}

}  // namespace modrwkv::cli

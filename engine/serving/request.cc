#include "engine/serving/request.h"

#include <algorithm>

namespace modrwkv::serving_internal {

void TakePromptRows(Request& r, int rows, int n_embd, StepEntry* e) {
  const int C = n_embd;
  while (rows > 0) {
    const InputRows& p = r.req.prompt[r.part];
    const int64_t part_rows = PartRows(p, C);
    const int64_t n = std::min<int64_t>(rows, part_rows - r.offset);
    if (!p.tokens.empty()) {
      e->inputs.push_back(
          InputRowsView::Tokens(absl::MakeConstSpan(p.tokens).subspan(r.offset, n)));
    } else {
      e->inputs.push_back(InputRowsView::Embeddings(
          absl::MakeConstSpan(p.embeddings).subspan(r.offset * C, n * C)));
    }
    r.offset += n;
    rows -= static_cast<int>(n);
    r.prompt_done += static_cast<int>(n);
    if (r.offset == part_rows) {
      ++r.part;
      r.offset = 0;
    }
  }
}

}  // namespace modrwkv::serving_internal

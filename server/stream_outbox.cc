#include "server/stream_outbox.h"

#include <algorithm>

#include "server/convert.h"

namespace modrwkv::server {

namespace {
bool HasOutput(const ::modrwkv::v1::TokenChunk& c) {
  return c.token_ids_size() > 0 || !c.text().empty();
}
}  // namespace

bool TokenBacklog::Append(const TokenEvent& event, int choice) {
  if (overflowed_) return false;
  if (choice >= static_cast<int>(chunks_.size())) {
    chunks_.resize(choice + 1);
    chunk_bytes_.resize(choice + 1, 0);
  }
  const size_t added = AppendTokenEvent(event, &chunks_[choice]);
  chunk_bytes_[choice] += added;
  bytes_ += added;
  if (bytes_ <= limit_) return false;
  Clear();
  overflowed_ = true;
  return true;
}

bool TokenBacklog::empty() const { return std::none_of(chunks_.begin(), chunks_.end(), HasOutput); }

bool TokenBacklog::TakeChoiceInto(int choice, ::modrwkv::v1::TokenChunk* out) {
  if (choice >= static_cast<int>(chunks_.size()) || !HasOutput(chunks_[choice])) return false;
  out->Swap(&chunks_[choice]);
  out->set_choice(choice);
  chunks_[choice].Clear();
  bytes_ -= chunk_bytes_[choice];
  chunk_bytes_[choice] = 0;
  return true;
}

void TokenBacklog::TakeInto(::modrwkv::v1::TokenChunk* out) {
  const int n = static_cast<int>(chunks_.size());
  for (int k = 0; k < n; ++k) {
    const int c = (next_ + k) % n;
    if (TakeChoiceInto(c, out)) {
      next_ = (c + 1) % n;
      return;
    }
  }
}

void TokenBacklog::Clear() {
  for (auto& c : chunks_) c.Clear();
  std::fill(chunk_bytes_.begin(), chunk_bytes_.end(), 0);
  bytes_ = 0;
}

}  // namespace modrwkv::server

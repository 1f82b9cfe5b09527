#include "server/stream_outbox.h"

#include "server/convert.h"

namespace modrwkv::server {

bool TokenBacklog::Append(const TokenEvent& event) {
  if (overflowed_) return false;
  bytes_ += AppendTokenEvent(event, &chunk_);
  if (bytes_ <= limit_) return false;
  Clear();
  overflowed_ = true;
  return true;
}

void TokenBacklog::TakeInto(::modrwkv::v1::TokenChunk* out) {
  out->Swap(&chunk_);
  chunk_.Clear();
  bytes_ = 0;
}

void TokenBacklog::Clear() {
  chunk_.Clear();
  bytes_ = 0;
}

}  // namespace modrwkv::server

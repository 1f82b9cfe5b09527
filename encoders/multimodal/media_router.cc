#include "encoders/multimodal/media_router.h"

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {

absl::StatusOr<std::shared_ptr<const MediaRouter>> MediaRouter::Create(
    std::map<std::string, std::shared_ptr<const ItemEncoder>> encoders) {
  if (encoders.empty()) return absl::InvalidArgumentError("a media router needs an encoder");
  for (const auto& [kind, e] : encoders) {
    if (e == nullptr) return absl::InvalidArgumentError(absl::StrCat("no encoder for ", kind));
  }
  return std::shared_ptr<const MediaRouter>(new MediaRouter(std::move(encoders)));
}

MediaRouter::MediaRouter(std::map<std::string, std::shared_ptr<const ItemEncoder>> encoders)
    : encoders_(std::move(encoders)) {
  for (const auto& [kind, e] : encoders_) {
    absl::StrAppend(&id_, id_.empty() ? "" : ";", kind, "=", e->id());
  }
}

absl::StatusOr<const ItemEncoder*> MediaRouter::For(const std::string& kind) const {
  auto it = encoders_.find(kind);
  if (it == encoders_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no encoder for media of kind '", kind, "' is loaded"));
  }
  return it->second.get();
}

absl::StatusOr<std::shared_ptr<const PreparedItem>> MediaRouter::Prepare(
    const MediaItem& item, cpu::ThreadPool* pool) const {
  MODRWKV_ASSIGN_OR_RETURN(const ItemEncoder* e, For(item.kind));
  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<const PreparedItem> p, e->Prepare(item, pool));
  if (p != nullptr && p->kind != item.kind) {  // tag it for EncodeBatch (copy only if untagged)
    auto tagged = std::make_shared<PreparedItem>(*p);
    tagged->kind = item.kind;
    p = std::move(tagged);
  }
  return p;
}

absl::Status MediaRouter::EncodeBatch(absl::Span<const PreparedItem* const> items,
                                      std::vector<EmbeddingRows>* out,
                                      cpu::ThreadPool* pool) const {
  for (const PreparedItem* item : items) {
    if (!serves(item->kind)) {
      return absl::InternalError(absl::StrCat("prepared item of unknown kind '", item->kind, "'"));
    }
  }
  out->clear();
  out->resize(items.size());
  for (const auto& [kind, e] : encoders_) {
    std::vector<const PreparedItem*> group;
    std::vector<size_t> where;
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i]->kind == kind) {
        group.push_back(items[i]);
        where.push_back(i);
      }
    }
    if (group.empty()) continue;
    std::vector<EmbeddingRows> rows;
    MODRWKV_RETURN_IF_ERROR(e->EncodeBatch(group, &rows, pool));
    if (rows.size() != group.size()) {
      return absl::InternalError(absl::StrCat("the ", kind, " encoder returned ", rows.size(),
                                              " outputs for ", group.size(), " items"));
    }
    for (size_t j = 0; j < group.size(); ++j) (*out)[where[j]] = std::move(rows[j]);
  }
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders

// One ItemEncoder for every modality a model serves, so that one encoder pool (one queue, one
// set of workers, one cache) takes a request's images and audio clips as a single job. Items are
// routed by MediaItem::kind; a batch holding several kinds is split per kind, order kept.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/pool/item_encoder.h"

namespace modrwkv::encoders {

inline constexpr char kImageKind[] = "image";
inline constexpr char kAudioKind[] = "audio";

class MediaRouter : public ItemEncoder {
 public:
  // `encoders` by kind; none may be null.
  static absl::StatusOr<std::shared_ptr<const MediaRouter>> Create(
      std::map<std::string, std::shared_ptr<const ItemEncoder>> encoders);

  bool serves(const std::string& kind) const { return encoders_.count(kind) > 0; }

  // "image=<id>;audio=<id>": changes when any routed encoder's output would.
  std::string id() const override { return id_; }
  absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(const MediaItem& item,
                                                              cpu::ThreadPool* pool) const override;
  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override;

 private:
  explicit MediaRouter(std::map<std::string, std::shared_ptr<const ItemEncoder>> encoders);
  absl::StatusOr<const ItemEncoder*> For(const std::string& kind) const;

  std::map<std::string, std::shared_ptr<const ItemEncoder>> encoders_;
  std::string id_;
};

}  // namespace modrwkv::encoders

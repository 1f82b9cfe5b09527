// The vision path from client bytes to embedding rows: decode (libvips) -> preprocess (the
// encoder's preprocessor_config.json) -> ViT tower -> adapter. Runs on the encoder worker pool's
// threads (ItemEncoder) and, synchronously, in the CLI.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "encoders/adapter/adapter_chain.h"
#include "encoders/image/image_decode.h"
#include "encoders/image/preprocess.h"
#include "encoders/pool/encoder_pool.h"
#include "encoders/vision/vision_tower.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// Immutable after Create; Prepare and EncodeBatch may run concurrently on several workers, each
// with its own thread pool.
class VisionPipeline : public ItemEncoder {
 public:
  // `id` names the encoder and adapter weights (part of the output cache key).
  static absl::StatusOr<std::unique_ptr<VisionPipeline>> Create(
      std::unique_ptr<VisionTower> tower, const PreprocessConfig& preprocess,
      std::unique_ptr<AdapterChain> adapter, const DecodeOptions& decode, std::string id);

  int rows_per_image() const { return rows_; }
  int dim() const { return adapter_->output_dim(); }
  // Whether the adapter runs through a runner (on a GPU), not on the CPU.
  bool adapter_placed() const { return adapter_->placed(); }
  const VisionTower& tower() const { return *tower_; }
  const DecodeOptions& decode_options() const { return decode_; }

  std::string id() const override { return id_; }
  absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(const MediaItem& item,
                                                              cpu::ThreadPool* pool) const override;
  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override;

  // One image, synchronously (CLI, tests): rows [rows_per_image()][dim()].
  absl::StatusOr<EmbeddingRows> EncodeImage(absl::Span<const uint8_t> bytes,
                                            absl::string_view field, cpu::ThreadPool* pool) const;

 private:
  VisionPipeline(std::unique_ptr<VisionTower> tower, const PreprocessConfig& preprocess,
                 std::unique_ptr<AdapterChain> adapter, const DecodeOptions& decode, std::string id,
                 int rows);

  std::unique_ptr<VisionTower> tower_;
  PreprocessConfig preprocess_;
  std::unique_ptr<AdapterChain> adapter_;
  DecodeOptions decode_;
  std::string id_;
  int rows_;  // adapter output rows per image
};

}  // namespace modrwkv::encoders

// The modality-specific half of an encoder worker pool: what a media item is, what the pool hands
// back, and the interface a pipeline (image decode + preprocess + tower + adapter; later audio and
// series) implements so that the pool can run it on its worker threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cpu/thread_pool.h"

namespace modrwkv::encoders {

// One piece of client media, as received (e.g. the bytes of a PNG). The bytes are shared so that a
// request can hand them over without copying megabytes.
struct MediaItem {
  std::shared_ptr<const std::string> bytes;
  std::string field;  // where it came from, for error messages: "input[2].image"
  // The modality ("image", "audio"), for encoders that serve several (MediaRouter); part of the
  // cache key, so the same bytes sent as two kinds never share rows.
  std::string kind;
};

// The output of stage 1 (decode + preprocess), the input of stage 2 (the batched tower). A plain
// tensor covers every modality (pixels [3][H][W], audio samples [T], series [T][F]), so encoders
// need no downcasts.
struct PreparedItem {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, product(shape) values
  std::string kind;         // the MediaItem's kind
  // For inputs padded to a fixed size (Whisper's 30 s of log-mel): how much of the last axis is
  // the item's own; -1 = all of it.
  int64_t valid = -1;
};

// The embedding rows of one item: [rows][dim] fp32, ready to splice into a prompt. Shared as
// std::shared_ptr<const EmbeddingRows> so that cache hits and their job results share memory.
struct EmbeddingRows {
  int rows = 0;
  int dim = 0;
  std::vector<float> data;  // [rows][dim]

  int64_t bytes() const { return static_cast<int64_t>(data.size() * sizeof(float)); }
};

// Implemented per model. The pool calls it from its worker threads, several at once (one call per
// worker at a time), so implementations must be thread-safe for concurrent const calls. `pool` is
// the calling worker's own cpu::ThreadPool; ParallelFor on it is safe without further locking.
class ItemEncoder {
 public:
  virtual ~ItemEncoder() = default;

  // Names the encoder and everything that changes its output (tower, preprocessing, adapter
  // fingerprint): part of the cache key, so two encoders with different outputs must differ here.
  virtual std::string id() const = 0;

  // Stage 1, per item: bytes -> prepared input. May fail for one item (undecodable bytes, wrong
  // kind); the pool fails only that item's job.
  virtual absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(
      const MediaItem& item, cpu::ThreadPool* pool) const = 0;

  // Stage 2, batched: prepared items -> one EmbeddingRows each, in order (out is resized by the
  // implementation to items.size()). An error fails every job with an item in the batch.
  virtual absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                                   std::vector<EmbeddingRows>* out,
                                   cpu::ThreadPool* pool) const = 0;
};

}  // namespace modrwkv::encoders

// Image parts of a request on their way to the engine: the encoder pool turns their bytes into
// rows off the scheduler thread, and the reactor submits the request once they are in.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "encoders/pool/encoder_pool.h"
#include "engine/serving/scheduler.h"
#include "server/convert.h"

namespace modrwkv::server {

struct ServingContext;

using EncodedMedia = absl::StatusOr<std::vector<std::shared_ptr<const encoders::EmbeddingRows>>>;

// Queues `images` on the context's encoder pool. `done` runs exactly once with the rows (in the
// order of `images`) or the error — decode errors as INVALID_ARGUMENT naming the image's field —
// on a pool thread, never inside this call. A queue that cannot take the images now is
// RESOURCE_EXHAUSTED (reason ENCODER_QUEUE_FULL, with RetryInfo; counted in the admission
// rejections), more images than the queue can ever hold INVALID_ARGUMENT; `done` then never runs.
// `priority` (the request's) orders the pool's queue; within a priority, callers (`owner`) take
// turns (EncoderPool::Submit) unless --no-fair-callers.
absl::StatusOr<encoders::JobId> EncodeMedia(ServingContext* ctx,
                                            const std::vector<PendingMedia>& images, int priority,
                                            const std::string& owner,
                                            std::function<void(EncodedMedia)> done);

// Prompt rows that came from each kind of media, for Usage, the request log and the metrics.
struct MediaRows {
  int image = 0;
  int audio = 0;
  int series = 0;
};
// Sums the encoded `rows` (in the order of `media`) by kind.
MediaRows CountMediaRows(const std::vector<PendingMedia>& media,
                         const std::vector<std::shared_ptr<const encoders::EmbeddingRows>>& rows);

// The engine times a request from its submission; a request with images was submitted after its
// encoding. Adds that wait to what the client and the log see (time to first token, total time).
void AddEncodeWait(absl::Duration wait, FinishEvent* event);

}  // namespace modrwkv::server

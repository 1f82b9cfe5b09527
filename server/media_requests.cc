#include "server/media_requests.h"

#include "absl/strings/match.h"
#include "engine/base/errors.h"
#include "server/serving_context.h"

namespace modrwkv::server {

absl::StatusOr<encoders::JobId> EncodeMedia(ServingContext* ctx,
                                            const std::vector<PendingMedia>& images, int priority,
                                            const std::string& owner,
                                            std::function<void(EncodedMedia)> done) {
  std::vector<encoders::MediaItem> items;
  items.reserve(images.size());
  std::vector<std::string> fields;
  for (const PendingMedia& p : images) {
    encoders::MediaItem item;
    item.bytes = p.bytes;
    item.field = p.field;
    item.kind = p.kind;
    fields.push_back(p.field);
    items.push_back(std::move(item));
  }
  auto on_done = [fields = std::move(fields), done = std::move(done)](EncodedMedia result) {
    if (!result.ok() && result.status().code() == absl::StatusCode::kInvalidArgument) {
      // The message starts with the image's field; name it in BadRequest too.
      for (const std::string& f : fields) {
        if (absl::StartsWith(result.status().message(), f)) {
          result = WithField(result.status(), f);
          break;
        }
      }
    }
    done(std::move(result));
  };
  absl::StatusOr<encoders::JobId> job = ctx->media_pool->Submit(
      std::move(items), std::move(on_done), priority,
      ctx->options->scheduler.fair_callers ? std::string_view(owner) : std::string_view());
  if (!job.ok() && job.status().code() == absl::StatusCode::kResourceExhausted) {
    if (ctx->metrics != nullptr) ctx->metrics->OnAdmissionRejected("encoder_queue_full");
    return WithReason(job.status(), "ENCODER_QUEUE_FULL");
  }
  return job;
}

MediaRows CountMediaRows(const std::vector<PendingMedia>& media,
                         const std::vector<std::shared_ptr<const encoders::EmbeddingRows>>& rows) {
  MediaRows n;
  for (size_t i = 0; i < media.size() && i < rows.size(); ++i) {
    const std::string& kind = media[i].kind;
    (kind == encoders::kAudioKind    ? n.audio
     : kind == encoders::kSeriesKind ? n.series
                                     : n.image) += rows[i]->rows;
  }
  return n;
}

void AddEncodeWait(absl::Duration wait, FinishEvent* event) {
  event->time_to_first_token += wait;  // stays infinite when there was no token
  event->total_time += wait;
}

}  // namespace modrwkv::server

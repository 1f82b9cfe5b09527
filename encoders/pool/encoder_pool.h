// The encoder worker pool: turns client media into embedding rows on its own threads, so that the
// scheduler thread keeps decoding while images are encoded. Generic over the modality (the
// ItemEncoder does the model-specific work); a bounded queue, batching across jobs, cancellation,
// an output cache and metrics hooks. No gRPC here: the server maps the statuses.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "encoders/pool/content_key.h"
#include "encoders/pool/embedding_cache.h"
#include "encoders/pool/item_encoder.h"

namespace modrwkv::encoders {

struct EncoderPoolOptions {
  int workers = 1;             // worker threads, each running one batch at a time
  int threads_per_worker = 1;  // size of each worker's cpu::ThreadPool (the worker included)
  int max_queued_items = 64;   // items waiting for a worker, over all jobs (encoder-queue-items)
  int max_batch = 8;           // items one worker takes per batch, from one or several jobs
  // Bytes of cached rows (LRU); 0 = no cache and no hashing. Identical items encoded at the same
  // time are not coalesced: both are encoded and the later result replaces the earlier in the
  // cache.
  int64_t cache_bytes = int64_t{64} << 20;
  // Nice value of the worker threads and their thread pools (Linux setpriority on each thread),
  // 0..19; threads already at a higher nice value (inherited from the process) keep theirs. A
  // positive value makes the kernel favour the scheduler's decode threads when both want a core: at
  // nice 10 a busy decode thread gets ~90% of a shared core (CFS weights 1024 vs 110). It reserves
  // nothing: on a 2-core machine, encoding still runs on both cores whenever decode leaves them
  // idle, and images simply take longer to be ready while decode is busy.
  int nice = 0;

  absl::Status Validate() const;
};

// Metrics hooks, called from the pool's threads (and Submit's caller for OnCacheLookup); must be
// thread-safe, cheap, and must not call back into the pool. Default: ignore.
class EncoderPoolObserver {
 public:
  virtual ~EncoderPoolObserver() = default;
  // Items waiting for a worker, after every change. Called with the pool's lock held, so the last
  // value seen is the current depth.
  virtual void OnQueueDepth(int items) {}
  // One batch ran: `items` it took, `encode_time` the wall time of Prepare + EncodeBatch.
  virtual void OnBatch(int items, absl::Duration encode_time) {}
  // One cache lookup per item of an accepted job while the cache is on.
  virtual void OnCacheLookup(bool hit) {}
  // The rows of one item answered for a job (encoded or from the cache).
  virtual void OnItemRows(int rows) {}
};

using JobId = uint64_t;

class EncoderPool {
 public:
  using Result = absl::StatusOr<std::vector<std::shared_ptr<const EmbeddingRows>>>;
  using Done = std::function<void(Result)>;

  // Starts options.workers threads. `observer` may be null; it must outlive the pool.
  static absl::StatusOr<std::unique_ptr<EncoderPool>> Create(
      std::shared_ptr<const ItemEncoder> encoder, const EncoderPoolOptions& options,
      EncoderPoolObserver* observer);

  // Finishes: queued jobs complete CANCELLED, running batches run to the end and their jobs
  // complete as usual, every `done` is called, then the threads are joined. Must not run
  // concurrently with other calls on the pool (a `done` that calls Submit during shutdown is
  // refused with UNAVAILABLE).
  ~EncoderPool();
  EncoderPool(const EncoderPool&) = delete;
  EncoderPool& operator=(const EncoderPool&) = delete;

  // Accepts a job of items and returns its id, or refuses it without calling `done`:
  //   INVALID_ARGUMENT   no items or no `done`, an item without bytes, or more items than
  //                      max_queued_items (such a job could never be queued);
  //   RESOURCE_EXHAUSTED the queue cannot take the job's uncached items now (try later);
  //   UNAVAILABLE        the pool is shutting down.
  // An accepted job gets exactly one `done` call: the rows of every item in order, or the first
  // failure (its status code, the message naming the item's index and field), or CANCELLED.
  // Queued items are taken highest `priority` first (the request's: Generate's `priority`); among
  // jobs of equal priority, callers take turns: a job is queued in round max(the round being
  // encoded, its caller's last queued job's round + 1), and rounds are served in order, arrivals
  // in order within one (start-time fair queuing, one unit a job). So a caller with many queued
  // jobs delays another caller's job by at most one of its own; with one caller ("" for all)
  // this is first come, first served. A batch in progress is never pre-empted.
  //
  // Threading: `done` is never called inside Submit or Cancel, nor with the pool's lock held. It
  // runs on a pool thread: the worker that finished the job's last batch, or the pool's delivery
  // thread (jobs answered entirely from the cache, cancellations of queued jobs, shutdown). So a
  // caller may hold its own locks around Submit/Cancel; `done` should be quick (it delays the
  // worker's next batch) and may call Submit and Cancel. Thread-safe.
  absl::StatusOr<JobId> Submit(std::vector<MediaItem> items, Done done, int priority = 0,
                               std::string_view caller = {});

  // Cancels a job: its queued items are dropped and it completes CANCELLED, at once (on the
  // delivery thread) if none of its items is being encoded, else after the running batch (whose
  // rows for it are discarded). No effect on a finished, failed or unknown job. Thread-safe.
  void Cancel(JobId id);

  // Items waiting for a worker, over all jobs.
  int queued_items() const;

  const EncoderPoolOptions& options() const { return options_; }

 private:
  struct Job {
    Done done;
    std::vector<std::shared_ptr<const EmbeddingRows>> rows;  // [items]
    int pending = 0;       // items not answered yet (queued or in a batch)
    int queued = 0;        // of which waiting in queue_
    int in_flight = 0;     // of which held by a running batch
    absl::Status failure;  // first error or CANCELLED; OK while the job can still succeed
  };
  struct WorkItem {
    JobId job = 0;
    int index = 0;  // in the job
    MediaItem item;
    std::optional<ContentKey> key;  // when the cache is on
    int priority = 0;               // the job's
    uint64_t round = 0;             // the job's turn among callers (Submit)
  };
  using Completion = std::pair<Done, Result>;

  EncoderPool(std::shared_ptr<const ItemEncoder> encoder, const EncoderPoolOptions& options,
              EncoderPoolObserver* observer);
  void WorkerMain();
  void DeliveryMain();
  void RunBatch(std::vector<WorkItem>& batch, cpu::ThreadPool* threads);
  // Marks a job failed (or cancelled) and drops its queued items. Needs mu_.
  void FailLocked(JobId id, Job& job, absl::Status status);
  // Completes the job into `out` when nothing of it is left in a batch and it either failed or
  // has every item; erases it. Needs mu_.
  void MaybeFinishLocked(JobId id, std::vector<Completion>* out);
  void ReportQueueDepthLocked();

  const std::shared_ptr<const ItemEncoder> encoder_;
  const std::string encoder_id_;
  const EncoderPoolOptions options_;
  EncoderPoolObserver* const observer_;  // may be null

  mutable std::mutex mu_;
  std::condition_variable work_cv_;      // queue_ non-empty or stopping_
  std::condition_variable delivery_cv_;  // deliveries_ non-empty or delivery_stop_
  std::condition_variable started_cv_;   // a worker started
  std::unordered_map<JobId, Job> jobs_;  // accepted jobs not completed yet
  // Highest priority first, then by round, FIFO within one; a job's items are contiguous.
  std::deque<WorkItem> queue_;
  uint64_t round_ = 0;  // the round of the last item a worker took
  // Each caller's last queued job's round (entries below round_ are spent: pruned in Submit).
  absl::flat_hash_map<std::string, uint64_t> caller_rounds_;
  std::deque<Completion> deliveries_;  // for the delivery thread
  EmbeddingCache cache_;
  JobId next_id_ = 1;
  bool stopping_ = false;
  bool delivery_stop_ = false;
  int started_ = 0;
  absl::Status start_error_;

  std::vector<std::thread> workers_;
  std::thread delivery_;
};

}  // namespace modrwkv::encoders

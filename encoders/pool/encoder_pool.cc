// The encoder worker pool: admission and the cache on the caller's thread, batches on the
// workers, completions outside the lock (workers and one delivery thread).
#include "encoders/pool/encoder_pool.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv::encoders {
namespace {

// "input[2].image: <message>" (or "media item 2: <message>" without a field), keeping the code;
// a message that already starts with the field (decoders name it) is left as it is.
absl::Status AnnotateItem(const absl::Status& s, int index, const std::string& field) {
  if (!field.empty() && absl::StartsWith(s.message(), field)) return s;
  const std::string where = field.empty() ? absl::StrCat("media item ", index) : field;
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

}  // namespace

absl::Status EncoderPoolOptions::Validate() const {
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) -> absl::Status {
    if (v < lo || v > hi) {
      return absl::InvalidArgumentError(
          absl::StrFormat("encoder pool option %s is %d, expected %d..%d", name, v, lo, hi));
    }
    return absl::OkStatus();
  };
  for (const absl::Status& s : {
           in_range("workers", workers, 1, 256),
           in_range("threads_per_worker", threads_per_worker, 1, 256),
           in_range("max_queued_items (encoder-queue-items)", max_queued_items, 1, 1 << 20),
           in_range("max_batch", max_batch, 1, 4096),
           in_range("cache_bytes", cache_bytes, 0, int64_t{1} << 40),
           in_range("nice", nice, 0, 19),
       }) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EncoderPool>> EncoderPool::Create(
    std::shared_ptr<const ItemEncoder> encoder, const EncoderPoolOptions& options,
    EncoderPoolObserver* observer) {
  if (encoder == nullptr) return absl::InvalidArgumentError("encoder pool needs an encoder");
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<EncoderPool> pool(new EncoderPool(std::move(encoder), options, observer));
  absl::Status start_error;
  {
    std::unique_lock<std::mutex> l(pool->mu_);
    pool->started_cv_.wait(l, [&] { return pool->started_ == options.workers; });
    start_error = pool->start_error_;
  }
  if (!start_error.ok()) return start_error;  // the destructor joins the threads
  return pool;
}

EncoderPool::EncoderPool(std::shared_ptr<const ItemEncoder> encoder,
                         const EncoderPoolOptions& options, EncoderPoolObserver* observer)
    : encoder_(std::move(encoder)),
      encoder_id_(encoder_->id()),
      options_(options),
      observer_(observer),
      cache_(options.cache_bytes) {
  delivery_ = std::thread([this] { DeliveryMain(); });
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerMain(); });
}

EncoderPool::~EncoderPool() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    // Every job not in a batch has queued items: cancel them all. Jobs in a batch complete when
    // the batch ends (CANCELLED if they also had queued items).
    std::vector<JobId> ids;
    for (const auto& [id, job] : jobs_) {
      if (job.queued > 0) ids.push_back(id);
    }
    std::vector<Completion> done;
    for (JobId id : ids) {
      FailLocked(id, jobs_.at(id), absl::CancelledError("the encoder pool is shutting down"));
      MaybeFinishLocked(id, &done);
    }
    for (auto& c : done) deliveries_.push_back(std::move(c));
  }
  work_cv_.notify_all();
  delivery_cv_.notify_all();
  for (std::thread& w : workers_) w.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    delivery_stop_ = true;
  }
  delivery_cv_.notify_all();
  delivery_.join();
}

absl::StatusOr<JobId> EncoderPool::Submit(std::vector<MediaItem> items, Done done, int priority,
                                          std::string_view caller) {
  const int n = static_cast<int>(items.size());
  if (n == 0) return absl::InvalidArgumentError("a media job needs at least one item");
  if (!done) return absl::InvalidArgumentError("a media job needs a completion callback");
  if (n > options_.max_queued_items) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the request has %d media items, more than the encoder queue can ever hold "
                        "(encoder-queue-items = %d)",
                        n, options_.max_queued_items));
  }
  for (int i = 0; i < n; ++i) {
    if (items[i].bytes == nullptr) {
      return AnnotateItem(absl::InvalidArgumentError("no bytes"), i, items[i].field);
    }
  }
  // Hash before taking the lock: it reads every byte.
  const bool cache_on = options_.cache_bytes > 0;
  std::vector<std::optional<ContentKey>> keys(n);
  if (cache_on) {
    for (int i = 0; i < n; ++i) {
      absl::StatusOr<ContentKey> key = ComputeContentKey(
          absl::StrCat(encoder_id_, absl::string_view("\0", 1), items[i].kind), *items[i].bytes);
      if (!key.ok()) return key.status();
      keys[i] = *key;
    }
  }

  std::vector<std::shared_ptr<const EmbeddingRows>> rows(n);
  int misses = n;
  JobId id = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return absl::UnavailableError("the encoder pool is shutting down");
    if (cache_on) {
      for (int i = 0; i < n; ++i) {
        rows[i] = cache_.Lookup(*keys[i]);
        if (rows[i] != nullptr) --misses;
      }
    }
    const int queued = static_cast<int>(queue_.size());
    if (queued + misses > options_.max_queued_items) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the encoder queue is full: %d media items queued, this request needs %d more, "
          "limit encoder-queue-items = %d; retry later",
          queued, misses, options_.max_queued_items));
    }
    id = next_id_++;
    if (misses == 0) {
      // Answered from the cache; delivered on the delivery thread, never inside Submit.
      deliveries_.emplace_back(std::move(done), rows);
      delivery_cv_.notify_one();
    } else {
      Job& job = jobs_[id];
      job.done = std::move(done);
      job.pending = misses;
      job.queued = misses;
      job.rows = rows;
      // The caller's turn (see Submit's comment), after dropping spent turns of others.
      if (caller_rounds_.size() > 64 + queue_.size()) {
        absl::erase_if(caller_rounds_, [&](const auto& e) { return e.second < round_; });
      }
      uint64_t round = round_;
      if (auto [it, added] = caller_rounds_.try_emplace(std::string(caller), round_); !added) {
        round = std::max(round_, it->second + 1);
        it->second = round;
      }
      // After the last item of a higher priority, or of this one and an earlier or equal round:
      // linear from the back, which max_queued_items bounds.
      auto at = queue_.end();
      while (at != queue_.begin() &&
             (std::prev(at)->priority < priority ||
              (std::prev(at)->priority == priority && std::prev(at)->round > round))) {
        --at;
      }
      std::vector<WorkItem> added;
      for (int i = 0; i < n; ++i) {
        if (rows[i] != nullptr) continue;
        added.push_back(WorkItem{id, i, std::move(items[i]), keys[i], priority, round});
      }
      queue_.insert(at, std::make_move_iterator(added.begin()),
                    std::make_move_iterator(added.end()));
      ReportQueueDepthLocked();
      work_cv_.notify_all();
    }
  }
  if (observer_ != nullptr) {
    for (int i = 0; i < n; ++i) {
      if (cache_on) observer_->OnCacheLookup(rows[i] != nullptr);
      if (rows[i] != nullptr) observer_->OnItemRows(rows[i]->rows);
    }
  }
  return id;
}

void EncoderPool::Cancel(JobId id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  FailLocked(id, it->second, absl::CancelledError("the media job was cancelled"));
  std::vector<Completion> done;
  MaybeFinishLocked(id, &done);
  if (done.empty()) return;
  for (auto& c : done) deliveries_.push_back(std::move(c));
  delivery_cv_.notify_one();
}

int EncoderPool::queued_items() const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int>(queue_.size());
}

void EncoderPool::FailLocked(JobId id, Job& job, absl::Status status) {
  if (!job.failure.ok()) return;  // the first failure wins
  job.failure = std::move(status);
  if (job.queued == 0) return;
  queue_.erase(
      std::remove_if(queue_.begin(), queue_.end(), [id](const WorkItem& w) { return w.job == id; }),
      queue_.end());
  job.pending -= job.queued;
  job.queued = 0;
  ReportQueueDepthLocked();
}

void EncoderPool::MaybeFinishLocked(JobId id, std::vector<Completion>* out) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  // A job is answered only once no batch holds its items, so `done` also means the pool is
  // finished with the job's bytes.
  if (job.in_flight > 0) return;
  if (!job.failure.ok()) {
    out->emplace_back(std::move(job.done), job.failure);
  } else if (job.pending == 0) {
    out->emplace_back(std::move(job.done), std::move(job.rows));
  } else {
    return;
  }
  jobs_.erase(it);
}

void EncoderPool::ReportQueueDepthLocked() {
  if (observer_ != nullptr) observer_->OnQueueDepth(static_cast<int>(queue_.size()));
}

void EncoderPool::DeliveryMain() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    delivery_cv_.wait(l, [&] { return delivery_stop_ || !deliveries_.empty(); });
    if (deliveries_.empty()) return;
    {
      Completion c = std::move(deliveries_.front());
      deliveries_.pop_front();
      l.unlock();
      c.first(std::move(c.second));
    }  // `c` (the callback's captures) is destroyed outside the lock too
    l.lock();
  }
}

void EncoderPool::WorkerMain() {
  absl::Status status;
  if (options_.nice != 0) {
    // Linux: nice is per thread, and threads inherit it from the thread that creates them, so
    // the ThreadPool below (created after this call) runs at the same priority. A thread that is
    // already nicer is left alone (lowering nice needs privileges).
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    const int current = getpriority(PRIO_PROCESS, tid);
    if ((current == -1 && errno != 0) ||
        (current < options_.nice && setpriority(PRIO_PROCESS, tid, options_.nice) != 0)) {
      status = absl::InternalError(
          absl::StrFormat("cannot set the encoder worker's nice value to %d: %s", options_.nice,
                          std::strerror(errno)));
    }
  }
  cpu::ThreadPool threads(options_.threads_per_worker);  // used only by this worker
  {
    std::lock_guard<std::mutex> l(mu_);
    ++started_;
    if (!status.ok() && start_error_.ok()) start_error_ = status;
  }
  started_cv_.notify_all();

  std::vector<WorkItem> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> l(mu_);
      work_cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      while (!queue_.empty() && static_cast<int>(batch.size()) < options_.max_batch) {
        Job& job = jobs_.at(queue_.front().job);  // queued items belong to live jobs
        --job.queued;
        ++job.in_flight;
        round_ = std::max(round_, queue_.front().round);
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      ReportQueueDepthLocked();
    }
    RunBatch(batch, &threads);
    batch.clear();
  }
}

void EncoderPool::RunBatch(std::vector<WorkItem>& batch, cpu::ThreadPool* threads) {
  const auto start = std::chrono::steady_clock::now();
  const int n = static_cast<int>(batch.size());
  auto job_live = [&](JobId id) {
    std::lock_guard<std::mutex> l(mu_);
    return jobs_.at(id).failure.ok();  // in_flight > 0 keeps the job in jobs_
  };

  // Stage 1, per item. A failure fails only that item's job, at once, so that its queued items
  // are dropped before another worker takes them.
  std::vector<std::shared_ptr<const PreparedItem>> prepared(n);
  for (int i = 0; i < n; ++i) {
    if (!job_live(batch[i].job)) continue;
    absl::StatusOr<std::shared_ptr<const PreparedItem>> p =
        encoder_->Prepare(batch[i].item, threads);
    if (p.ok() && *p == nullptr) p = absl::InternalError("the encoder prepared nothing");
    if (p.ok()) {
      prepared[i] = *std::move(p);
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    FailLocked(batch[i].job, jobs_.at(batch[i].job),
               AnnotateItem(p.status(), batch[i].index, batch[i].item.field));
  }

  // Stage 2: one batch of the prepared items whose jobs are still live (cancelled or failed
  // meanwhile: skipped).
  std::vector<int> encoded;  // indices into batch
  std::vector<const PreparedItem*> inputs;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int i = 0; i < n; ++i) {
      if (prepared[i] != nullptr && jobs_.at(batch[i].job).failure.ok()) {
        encoded.push_back(i);
        inputs.push_back(prepared[i].get());
      }
    }
  }
  std::vector<EmbeddingRows> out;
  absl::Status batch_status;
  if (!inputs.empty()) {
    batch_status = encoder_->EncodeBatch(inputs, &out, threads);
    if (batch_status.ok() && out.size() != inputs.size()) {
      batch_status = absl::InternalError(
          absl::StrFormat("encoder %s returned %d outputs for a batch of %d items", encoder_id_,
                          out.size(), inputs.size()));
    }
  }
  prepared.clear();
  const absl::Duration elapsed = absl::FromChrono(std::chrono::steady_clock::now() - start);

  std::vector<Completion> done;
  std::vector<int> answered_rows;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t k = 0; k < encoded.size(); ++k) {
      WorkItem& w = batch[encoded[k]];
      Job& job = jobs_.at(w.job);
      if (!batch_status.ok()) {
        FailLocked(w.job, job, AnnotateItem(batch_status, w.index, w.item.field));
        continue;
      }
      EmbeddingRows& r = out[k];
      if (r.rows <= 0 || r.dim <= 0 ||
          r.data.size() != static_cast<size_t>(r.rows) * static_cast<size_t>(r.dim)) {
        FailLocked(w.job, job,
                   AnnotateItem(absl::InternalError(absl::StrFormat(
                                    "encoder %s returned %d values for [%d][%d] rows", encoder_id_,
                                    r.data.size(), r.rows, r.dim)),
                                w.index, w.item.field));
        continue;
      }
      auto rows = std::make_shared<const EmbeddingRows>(std::move(r));
      // Cached even when the job was cancelled meanwhile: the rows are right, and a retry of the
      // same request will find them.
      if (w.key.has_value()) cache_.Insert(*w.key, rows);
      if (job.failure.ok()) {
        answered_rows.push_back(rows->rows);
        job.rows[w.index] = std::move(rows);
        --job.pending;
      }
    }
    for (const WorkItem& w : batch) --jobs_.at(w.job).in_flight;
    for (const WorkItem& w : batch) MaybeFinishLocked(w.job, &done);
  }
  batch.clear();  // the pool is done with these items' bytes before their jobs are answered
  if (observer_ != nullptr) {
    observer_->OnBatch(n, elapsed);
    for (int r : answered_rows) observer_->OnItemRows(r);
  }
  for (auto& [fn, result] : done) fn(std::move(result));
  done.clear();  // destroys the callbacks' captures before the next batch, outside the lock
}

}  // namespace modrwkv::encoders

// A fake ItemEncoder for the pool's tests: rows computed from the bytes, per-item failures chosen
// by the bytes, and a gate that holds batches inside EncodeBatch until the test opens it.
#pragma once

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "encoders/pool/item_encoder.h"

namespace modrwkv::encoders::testing {

// The rows the fake produces for `bytes`: [1 + size % 5][2], values from the bytes and position.
inline EmbeddingRows FakeRows(const std::string& bytes) {
  EmbeddingRows r;
  r.rows = 1 + static_cast<int>(bytes.size() % 5);
  r.dim = 2;
  float sum = 0;
  for (unsigned char c : bytes) sum = sum * 31 + c;
  for (int i = 0; i < r.rows; ++i) {
    r.data.push_back(sum + i);
    r.data.push_back(static_cast<float>(bytes.size()) * 1000 + i);
  }
  return r;
}

inline int CurrentNice() {
  return getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
}

// Bytes starting "bad" fail Prepare; a batch holding bytes starting "boom" fails EncodeBatch.
class FakeItemEncoder : public ItemEncoder {
 public:
  std::string id() const override { return "fake-encoder-v1"; }

  absl::StatusOr<std::shared_ptr<const PreparedItem>> Prepare(
      const MediaItem& item, cpu::ThreadPool* pool) const override {
    RecordNice();
    if (absl::StartsWith(*item.bytes, "bad")) {
      return absl::InvalidArgumentError("cannot decode image: not a PNG or JPEG");
    }
    auto p = std::make_shared<PreparedItem>();
    p->shape = {static_cast<int64_t>(item.bytes->size())};
    for (unsigned char c : *item.bytes) p->data.push_back(c);
    return p;
  }

  absl::Status EncodeBatch(absl::Span<const PreparedItem* const> items,
                           std::vector<EmbeddingRows>* out, cpu::ThreadPool* pool) const override {
    {
      std::unique_lock<std::mutex> l(mu_);
      batch_sizes_.push_back(static_cast<int>(items.size()));
      cv_.notify_all();
      cv_.wait(l, [&] { return open_; });
    }
    std::vector<std::string> bytes(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      for (float v : items[i]->data) bytes[i].push_back(static_cast<char>(v));
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      encoded_.insert(encoded_.end(), bytes.begin(), bytes.end());
    }
    for (const std::string& b : bytes) {
      if (absl::StartsWith(b, "boom")) return absl::InternalError("tower failed");
    }
    out->resize(items.size());
    pool->ParallelFor(static_cast<int64_t>(items.size()), [&](int64_t i, int) {
      RecordNice();
      (*out)[i] = FakeRows(bytes[i]);
    });
    return absl::OkStatus();
  }

  // Batches block in EncodeBatch while the gate is closed.
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = false;
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Waits until `n` batches have entered EncodeBatch in total.
  void WaitBatches(int n) const {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return static_cast<int>(batch_sizes_.size()) >= n; });
  }
  // Every item's bytes in the order batches took them.
  std::vector<std::string> encoded() const {
    std::lock_guard<std::mutex> l(mu_);
    return encoded_;
  }
  std::vector<int> batch_sizes() const {
    std::lock_guard<std::mutex> l(mu_);
    return batch_sizes_;
  }
  std::set<int> nice_values() const {
    std::lock_guard<std::mutex> l(mu_);
    return nice_;
  }

 private:
  void RecordNice() const {
    std::lock_guard<std::mutex> l(mu_);
    nice_.insert(CurrentNice());
  }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool open_ = true;
  mutable std::vector<int> batch_sizes_;  // items per EncodeBatch call
  mutable std::vector<std::string> encoded_;
  mutable std::set<int> nice_;  // nice values of the threads that ran it
};

}  // namespace modrwkv::encoders::testing

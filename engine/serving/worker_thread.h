// One background thread running posted tasks in order: work that must not stall the scheduler
// thread (state-blob encoding, decoding and their checksums). Thread-safe. The destructor runs
// every task already posted, then joins; Run() after destruction began runs the task inline.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace modrwkv {

class WorkerThread {
 public:
  WorkerThread() : thread_([this] { Loop(); }) {}
  ~WorkerThread() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  void Run(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!exited_) {
        tasks_.push_back(std::move(task));
        cv_.notify_one();
        return;
      }
    }
    task();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      cv_.wait(l, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) break;  // stop_ and nothing left
      std::function<void()> t = std::move(tasks_.front());
      tasks_.pop_front();
      l.unlock();
      t();
      l.lock();
    }
    exited_ = true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false, exited_ = false;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace modrwkv

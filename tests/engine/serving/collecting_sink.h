// A StreamSink that keeps a request's tokens, text and finish, and lets the test wait for the
// finish: tests of the scheduler (tests only).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "engine/serving/scheduler.h"
#include "gtest/gtest.h"

namespace modrwkv {

class CollectingSink : public StreamSink {
 public:
  void OnTokens(TokenEvent e) override {
    std::lock_guard<std::mutex> l(mu_);
    for (int32_t t : e.tokens) tokens_.push_back(t);
    text_ += e.text;
    ++events_;
  }
  void OnFinish(FinishEvent e) override {
    std::lock_guard<std::mutex> l(mu_);
    finish_ = e;
    ++finishes_;
    cv_.notify_all();
  }
  FinishEvent Wait() {
    std::unique_lock<std::mutex> l(mu_);
    EXPECT_TRUE(cv_.wait_for(l, std::chrono::seconds(60), [&] { return finishes_ > 0; }));
    return finish_;
  }
  std::vector<int32_t> tokens() {
    std::lock_guard<std::mutex> l(mu_);
    return tokens_;
  }
  std::string text() {
    std::lock_guard<std::mutex> l(mu_);
    return text_;
  }
  int finishes() {
    std::lock_guard<std::mutex> l(mu_);
    return finishes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> tokens_;
  std::string text_;
  int events_ = 0, finishes_ = 0;
  FinishEvent finish_;
};

}  // namespace modrwkv

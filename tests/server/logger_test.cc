// Structured log lines: logfmt quoting and JSON escaping.
#include "server/logger.h"

#include <cstdio>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace modrwkv::server {
namespace {

TEST(LoggerTest, TextLinesAreLogfmt) {
  Logger log(LogLevel::kInfo, LogFormat::kText);
  const std::string line = log.Format(
      LogLevel::kInfo, "request",
      {{"request_id", "abc"}, {"tokens", 12}, {"error", "bad \"value\" here"}, {"ok", true}});
  EXPECT_NE(line.find(" level=info msg=request request_id=abc tokens=12 "
                      "error=\"bad \\\"value\\\" here\" ok=true"),
            std::string::npos)
      << line;
  EXPECT_EQ(line.rfind("ts=", 0), 0u);
}

TEST(LoggerTest, JsonLinesEscapeAndKeepNumbersBare) {
  Logger log(LogLevel::kInfo, LogFormat::kJson);
  const std::string line =
      log.Format(LogLevel::kWarn, "a\nb", {{"n", 3}, {"s", std::string("x\x01y")}, {"d", 0.5}});
  EXPECT_NE(
      line.find("\"level\":\"warn\",\"msg\":\"a\\nb\",\"n\":3,\"s\":\"x\\u0001y\",\"d\":0.5}"),
      std::string::npos)
      << line;
}

TEST(LoggerTest, LevelFilters) {
  Logger log(LogLevel::kWarn, LogFormat::kText);
  EXPECT_FALSE(log.Enabled(LogLevel::kInfo));
  EXPECT_TRUE(log.Enabled(LogLevel::kError));
}

TEST(LoggerTest, LinesFromManyThreadsArriveWholeAndInOrderPerThread) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Logger log(LogLevel::kInfo, LogFormat::kText, f);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < 200; ++i) log.Info("line", {{"thread", t}, {"i", i}});
      });
    }
    for (auto& th : threads) th.join();
  }  // the destructor writes everything queued
  std::rewind(f);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  int lines = 0;
  std::vector<int> next(4, 0);
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    const std::string line = text.substr(start, end - start);
    int t = -1, i = -1;
    ASSERT_EQ(std::sscanf(line.c_str() + line.find("thread="), "thread=%d i=%d", &t, &i), 2)
        << line;
    EXPECT_EQ(i, next[t]++);
    ++lines;
  }
  EXPECT_EQ(lines, 800);
}

}  // namespace
}  // namespace modrwkv::server

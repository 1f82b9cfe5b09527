// Debian's redis-server for tests that use a real Redis (the shared session tier): started on a
// free loopback port without persistence, killed with the test (and with the test process).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace modrwkv::testing_redis {

// A free TCP port on loopback (bound and released; the server binds it right after).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

inline bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

class RedisProcess {
 public:
  // nullptr (and a test failure) when redis-server does not start within 10 s.
  // `args` are added to the command line (e.g. {"--requirepass", "secret"}).
  static std::unique_ptr<RedisProcess> Start(std::vector<std::string> args = {}) {
    auto r = std::unique_ptr<RedisProcess>(new RedisProcess());
    r->args_ = std::move(args);
    r->port_ = FreePort();
    if (!r->Launch()) return nullptr;
    return r;
  }
  // A fresh, empty redis-server on the same port (after Stop).
  bool Restart() {
    Stop();
    return Launch();
  }
  ~RedisProcess() { Stop(); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

 private:
  RedisProcess() = default;
  bool Launch() {
    const std::string port = std::to_string(port_);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      const int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, 1);
      dup2(null_fd, 2);
      std::vector<std::string> argv = {
          "redis-server", "--port", port,           "--bind", "127.0.0.1",
          "--save",       "",       "--appendonly", "no"};
      argv.insert(argv.end(), args_.begin(), args_.end());
      std::vector<char*> cargv;
      for (std::string& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execvp("redis-server", cargv.data());
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!Accepts(port_)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "redis-server did not start (scripts/install-deps.sh installs it)";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  pid_t pid_ = -1;
  int port_ = 0;
  std::vector<std::string> args_;
};

}  // namespace modrwkv::testing_redis

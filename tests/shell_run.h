// Runs a shell command for tests that drive the real binaries: stdout, stderr and exit code.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace modrwkv::testing_shell {

struct ShellRun {
  int code = -1;  // exit status, -1 if the command did not exit normally
  std::string out;
  std::string err;
};

// Runs `sh -c "<command> 2>tmpfile"`.
inline ShellRun RunShell(const std::string& command) {
  const std::filesystem::path err_file =
      std::filesystem::temp_directory_path() / ("modrwkv_shell_err_" + std::to_string(getpid()));
  const std::string cmd = command + " 2>" + err_file.string();
  ShellRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err_file);
  return r;
}

}  // namespace modrwkv::testing_shell

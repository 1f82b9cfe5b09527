#include "engine/cpu/cpu_budget.h"

#include <sched.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace modrwkv::cpu {
namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// CPUs of quota / period, rounded up; nullopt for "no limit" or an unreadable file.
std::optional<double> QuotaCpus(double quota, double period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return quota / period;
}

// cgroup v2: "max 100000" (no limit) or "400000 100000".
std::optional<double> ReadCpuMax(const std::string& path) {
  std::optional<std::string> text = ReadFile(path);
  if (!text) return std::nullopt;
  std::vector<std::string> f = absl::StrSplit(absl::StripAsciiWhitespace(*text), ' ');
  double quota, period;
  if (f.size() != 2 || f[0] == "max" || !absl::SimpleAtod(f[0], &quota) ||
      !absl::SimpleAtod(f[1], &period)) {
    return std::nullopt;
  }
  return QuotaCpus(quota, period);
}

// cgroup v1: cpu.cfs_quota_us (-1 = no limit) and cpu.cfs_period_us in `dir`.
std::optional<double> ReadCfs(const std::string& dir) {
  std::optional<std::string> q = ReadFile(dir + "/cpu.cfs_quota_us");
  std::optional<std::string> p = ReadFile(dir + "/cpu.cfs_period_us");
  double quota, period;
  if (!q || !p || !absl::SimpleAtod(absl::StripAsciiWhitespace(*q), &quota) ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(*p), &period)) {
    return std::nullopt;
  }
  return QuotaCpus(quota, period);
}

// The smallest quota on the way from `rel` (a cgroup path) up to the mount root: a parent's limit
// binds its children too. Inside a container's cgroup namespace `rel` is usually "/".
template <typename Read>
std::optional<double> TightestOnPath(const std::string& mount, std::string rel, Read read) {
  std::optional<double> best;
  while (true) {
    std::string dir = mount;
    if (rel != "/" && !rel.empty()) absl::StrAppend(&dir, rel);
    if (std::optional<double> q = read(dir); q && (!best || *q < *best)) best = q;
    if (rel == "/" || rel.empty()) break;
    const size_t cut = rel.rfind('/');
    rel = cut == 0 ? "/" : rel.substr(0, cut);
  }
  return best;
}

}  // namespace

CpuBudget ComputeCpuBudget(int affinity_cpus, const std::string& cgroup_root,
                           const std::string& proc_self_cgroup) {
  CpuBudget b;
  b.threads = std::max(1, affinity_cpus);
  b.reason = absl::StrCat("affinity mask: ", b.threads, " CPUs");
  // /proc/self/cgroup lines: "hierarchy-id:controllers:path"; v2 is "0::path".
  std::optional<double> quota;
  std::string which;
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    std::optional<double> q;
    if (f[0] == "0" && f[1].empty()) {
      q = TightestOnPath(cgroup_root, f[2],
                         [](const std::string& d) { return ReadCpuMax(d + "/cpu.max"); });
      if (q) which = "cgroup v2 cpu.max";
    } else {
      for (absl::string_view c : absl::StrSplit(f[1], ',')) {
        if (c != "cpu") continue;
        // The v1 controller is mounted as cpu, or cpu,cpuacct (cpu/ is often a link to it).
        for (const std::string& mount : {cgroup_root + "/cpu,cpuacct", cgroup_root + "/cpu"}) {
          q = TightestOnPath(mount, f[2], ReadCfs);
          if (q) break;
        }
        if (q) which = "cgroup v1 cpu.cfs_quota_us";
      }
    }
    if (q && (!quota || *q < *quota)) quota = q;
  }
  if (quota) {
    const int cap = std::max(1, static_cast<int>(std::ceil(*quota - 1e-9)));
    absl::StrAppend(&b.reason, "; ", which, " quota: ", *quota, " CPUs");
    if (cap < b.threads) b.threads = cap;
  } else {
    absl::StrAppend(&b.reason, "; no cgroup CPU quota");
  }
  return b;
}

CpuBudget DetectCpuBudget() {
  int affinity = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) affinity = CPU_COUNT(&set);
  if (affinity <= 0) affinity = static_cast<int>(std::thread::hardware_concurrency());
  return ComputeCpuBudget(affinity, "/sys/fs/cgroup",
                          ReadFile("/proc/self/cgroup").value_or(std::string()));
}

}  // namespace modrwkv::cpu

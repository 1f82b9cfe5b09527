// How many threads "all the CPUs" means for this process: the CPUs its affinity mask allows,
// capped by the cgroup CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`)
// as a container on Kubernetes sees them. hardware_concurrency() counts the node's CPUs, which in
// a 4-CPU pod on a 64-core node would start 64 threads fighting over 4 CPUs' worth of quota.
#pragma once

#include <string>

namespace modrwkv::cpu {

struct CpuBudget {
  int threads = 1;
  std::string reason;  // for the log: "affinity mask: 8 CPUs; cgroup v2 cpu.max quota: 4 CPUs"
};

// The real process: sched_getaffinity, /proc/self/cgroup, /sys/fs/cgroup.
CpuBudget DetectCpuBudget();

// The same from given inputs (tests): the affinity mask's CPU count, the cgroup filesystem's
// mount point and the text of /proc/self/cgroup.
CpuBudget ComputeCpuBudget(int affinity_cpus, const std::string& cgroup_root,
                           const std::string& proc_self_cgroup);

}  // namespace modrwkv::cpu

// Threads for --threads 0 from a fake cgroup filesystem: v2 cpu.max (nested limits), v1 CFS quota,
// no quota, and quotas above the affinity mask.
#include "engine/cpu/cpu_budget.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace modrwkv::cpu {
namespace {

namespace fs = std::filesystem;

class CpuBudgetTest : public testing::Test {
 protected:
  void SetUp() override {
    root_ =
        fs::temp_directory_path() / ("cpu_budget_test_" + std::to_string(::getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& text) {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << text;
  }
  fs::path root_;
};

TEST_F(CpuBudgetTest, CgroupV2QuotaCapsTheAffinityMask) {
  Write("cpu.max", "400000 100000\n");  // a 4-CPU pod
  CpuBudget b = ComputeCpuBudget(64, root_.string(), "0::/\n");
  EXPECT_EQ(b.threads, 4);
  EXPECT_NE(b.reason.find("affinity mask: 64 CPUs"), std::string::npos) << b.reason;
  EXPECT_NE(b.reason.find("cgroup v2 cpu.max quota: 4 CPUs"), std::string::npos) << b.reason;
}

TEST_F(CpuBudgetTest, FractionalQuotaRoundsUpAndNestedLimitsBind) {
  Write("kubepods/cpu.max", "150000 100000\n");    // parent: 1.5 CPUs
  Write("kubepods/pod1/cpu.max", "max 100000\n");  // the pod itself: no limit
  EXPECT_EQ(ComputeCpuBudget(8, root_.string(), "0::/kubepods/pod1\n").threads, 2);
}

TEST_F(CpuBudgetTest, NoQuotaMeansTheAffinityMask) {
  Write("cpu.max", "max 100000\n");
  CpuBudget b = ComputeCpuBudget(6, root_.string(), "0::/\n");
  EXPECT_EQ(b.threads, 6);
  EXPECT_NE(b.reason.find("no cgroup CPU quota"), std::string::npos);
  EXPECT_EQ(ComputeCpuBudget(3, root_.string(), "").threads, 3);  // no cgroup file at all
}

TEST_F(CpuBudgetTest, QuotaAboveTheMaskDoesNotAddThreads) {
  Write("cpu.max", "1600000 100000\n");
  EXPECT_EQ(ComputeCpuBudget(2, root_.string(), "0::/\n").threads, 2);
}

TEST_F(CpuBudgetTest, CgroupV1CfsQuota) {
  Write("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
  Write("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  const std::string proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n";
  CpuBudget b = ComputeCpuBudget(32, root_.string(), proc);
  EXPECT_EQ(b.threads, 3);
  EXPECT_NE(b.reason.find("cgroup v1"), std::string::npos) << b.reason;
  Write("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");  // unlimited
  EXPECT_EQ(ComputeCpuBudget(32, root_.string(), proc).threads, 32);
}

TEST_F(CpuBudgetTest, GarbageFilesAreIgnored) {
  Write("cpu.max", "lots please\n");
  EXPECT_EQ(ComputeCpuBudget(4, root_.string(), "0::/\n").threads, 4);
  Write("cpu.max", "0 100000\n");
  EXPECT_EQ(ComputeCpuBudget(4, root_.string(), "0::/\n").threads, 4);
}

TEST(DetectCpuBudget, IsAtLeastOneAndAtMostTheMachine) {
  CpuBudget b = DetectCpuBudget();
  EXPECT_GE(b.threads, 1);
  EXPECT_FALSE(b.reason.empty());
}

}  // namespace
}  // namespace modrwkv::cpu

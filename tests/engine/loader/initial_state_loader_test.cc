// Reading state-tuning files (engine/loader/initial_state_loader.cc). Their numerics against the
// official package are in tests/engine/cpu/cpu_model_golden_test.cc (initial_state fixtures).
#include "engine/loader/initial_state_loader.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "engine/checkpoint/checkpoint.h"
#include "engine/checkpoint/random_weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace modrwkv {
namespace {

using ::testing::HasSubstr;

ModelConfig Config() {  // 2 layers, 2 heads of 64
  ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 128;
  c.n_head = 2;
  c.head_size = 64;
  c.vocab_size = 256;
  return c;
}

constexpr int64_t kMatrix = 2 * 64 * 64;

// Layer l's value at [h][v][k]: distinct everywhere, so a misplaced or transposed value shows.
float Value(int l, int64_t h, int64_t v, int64_t k) {
  return static_cast<float>(l * 100000 + h * 10000 + v * 64 + k) / 1024.0f;
}

OwnedTensor TimeState(int layer, DType dtype = DType::kF32,
                      std::vector<int64_t> shape = {2, 64, 64}) {
  OwnedTensor t;
  t.name = "blocks." + std::to_string(layer) + ".att.time_state";
  t.dtype = dtype;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.bytes.resize(n * DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    const float x = Value(layer, i / 4096, i / 64 % 64, i % 64);
    if (dtype == DType::kF32) {
      std::memcpy(t.bytes.data() + 4 * i, &x, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBF16(x) : F32ToF16(x);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

class InitialStateLoaderTest : public testing::Test {
 protected:
  std::string Write(const std::vector<OwnedTensor>& tensors, bool safetensors = false) {
    const std::string path =
        (std::filesystem::temp_directory_path() /
         (std::string(testing::UnitTest::GetInstance()->current_test_info()->name()) +
          (safetensors ? ".safetensors" : ".pth")))
            .string();
    const absl::Status st =
        safetensors ? WriteSafetensors(path, tensors) : WriteTorchCheckpoint(path, tensors);
    EXPECT_TRUE(st.ok()) << st;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::filesystem::remove(p);
  }
  std::vector<std::string> paths_;
};

TEST_F(InitialStateLoaderTest, PlacesEachLayersMatrixAsStoredBetweenZeroShifts) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (bool safetensors : {false, true}) {
      const std::string path = Write({TimeState(0, dtype), TimeState(1, dtype)}, safetensors);
      absl::StatusOr<InitialState> s = LoadInitialState("persona", path, Config());
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->name, "persona");
      const ModelConfig c = Config();
      ASSERT_EQ(static_cast<int64_t>(s->state.size()), c.StateFloats());
      for (int l = 0; l < 2; ++l) {
        const float* layer = s->state.data() + l * c.StateFloatsPerLayer();
        for (int i = 0; i < c.n_embd; ++i) {
          EXPECT_EQ(layer[i], 0.0f);                       // att_shift
          EXPECT_EQ(layer[c.n_embd + kMatrix + i], 0.0f);  // ffn_shift
        }
        // [head][value][key] as stored (no transpose): e.g. head 1, value 3, key 60.
        const float want = Value(l, 1, 3, 60);
        const float tol = dtype == DType::kF32 ? 0.0f : std::abs(want) * 1e-2f;
        EXPECT_NEAR(layer[c.n_embd + 4096 + 3 * 64 + 60], want, tol)
            << DTypeName(dtype) << " layer " << l;
        EXPECT_NEAR(layer[c.n_embd + 4096 + 60 * 64 + 3], Value(l, 1, 60, 3),
                    dtype == DType::kF32 ? 0.0f : std::abs(Value(l, 1, 60, 3)) * 1e-2f);
      }
    }
  }
}

TEST_F(InitialStateLoaderTest, RefusesWhatIsNotThisModelsState) {
  struct Bad {
    std::vector<OwnedTensor> tensors;
    std::string message;
  };
  OwnedTensor nan = TimeState(1);
  const float q = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan.bytes.data() + 4 * (4096 + 5 * 64 + 7), &q, 4);
  OwnedTensor other = TimeState(0);
  other.name = "emb.weight";
  OwnedTensor padded = TimeState(1);
  padded.name = "blocks.01.att.time_state";
  const std::vector<Bad> bad = {
      {{TimeState(0)}, "no tensor blocks.1.att.time_state"},
      {{TimeState(0), TimeState(1, DType::kF32, {2, 64, 32})},
       "blocks.1.att.time_state has shape [2,64,32], expected [2,64,64]"},
      {{TimeState(0), TimeState(1, DType::kF32, {1, 2, 64, 64})}, "expected [2,64,64]"},
      {{TimeState(0), nan}, "blocks.1.att.time_state holds nan at [1,5,7]"},
      {{TimeState(0), TimeState(1), TimeState(2)},
       "blocks.2.att.time_state: the model has 2 layers"},
      {{TimeState(0), TimeState(1), other}, "tensor emb.weight is not a state tensor"},
      {{TimeState(0), TimeState(1), padded}, "tensor blocks.01.att.time_state is not a state"},
  };
  for (const Bad& b : bad) {
    const std::string path = Write(b.tensors);
    absl::StatusOr<InitialState> s = LoadInitialState("x", path, Config());
    ASSERT_FALSE(s.ok()) << b.message;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    EXPECT_THAT(s.status().message(), HasSubstr(b.message));
    EXPECT_THAT(s.status().message(), HasSubstr(path));  // which file
  }
  EXPECT_FALSE(LoadInitialState("x", "/nonexistent/state.pth", Config()).ok());
}

TEST(InitialStateFromTensors, AModelCheckpointWithoutStateHasNone) {
  OwnedTensor emb = TimeState(0);
  emb.name = "emb.weight";
  std::map<std::string, TensorView> views = ViewsOf(std::vector<OwnedTensor>{emb});
  absl::StatusOr<std::optional<InitialState>> s = InitialStateFromTensors("m", views, Config());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->has_value());

  // A merged checkpoint (RWKV-PEFT merge_state.py: the model's tensors and the state's).
  const std::vector<OwnedTensor> merged = {emb, TimeState(0), TimeState(1)};
  views = ViewsOf(merged);
  s = InitialStateFromTensors("m", views, Config());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ((*s)->state[128 + 7], Value(0, 0, 0, 7));
}

}  // namespace
}  // namespace modrwkv

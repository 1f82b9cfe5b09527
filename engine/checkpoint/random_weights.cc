#include "engine/checkpoint/random_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace modrwkv {

uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

namespace {

// Python's round(): half to even.
int RoundHalfEven(double x) { return static_cast<int>(std::nearbyint(x)); }

int LoraRank(double factor, double base) {
  return std::max(32, RoundHalfEven(factor * base / 32.0) * 32);
}

}  // namespace

LoraRanks LoraRanksFor(int c) {
  const double sq = std::sqrt(static_cast<double>(c));
  return {LoraRank(1.8, sq), LoraRank(1.8, sq), LoraRank(1.3, sq),
          LoraRank(0.6, std::pow(static_cast<double>(c), 0.8))};
}

absl::Status RandomModelSpec::Validate() const {
  if (n_layer < 1 || n_layer > 256)
    return absl::InvalidArgumentError("n_layer must be in [1, 256]");
  if (n_embd < 64 || n_embd % 64 != 0 || n_embd > 16384) {
    return absl::InvalidArgumentError("n_embd must be a multiple of 64 in [64, 16384]");
  }
  if (vocab_size < 2 || vocab_size > (1 << 20)) {
    return absl::InvalidArgumentError("vocab_size must be in [2, 1048576]");
  }
  if (dtype == DType::kF16) return absl::InvalidArgumentError("dtype must be f32 or bf16");
  return absl::OkStatus();
}

absl::StatusOr<RandomModelSpec> RandomSpecForShape(const std::string& shape) {
  RandomModelSpec s;
  if (shape == "tiny") {
    s.n_layer = 2, s.n_embd = 128;
  } else if (shape == "0.1b") {
    s.n_layer = 12, s.n_embd = 768;
  } else if (shape == "0.4b") {
    s.n_layer = 24, s.n_embd = 1024;
  } else if (shape == "1.5b") {
    s.n_layer = 24, s.n_embd = 2048;
  } else if (shape == "2.9b") {
    s.n_layer = 32, s.n_embd = 2560;
  } else if (shape == "7.2b") {
    s.n_layer = 32, s.n_embd = 4096;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown model shape '", shape, "'; expected tiny, 0.1b, 0.4b, 1.5b, 2.9b or 7.2b"));
  }
  return s;
}

uint64_t RandomTensorKey(uint64_t seed, const std::string& name) {
  return SplitMix64(seed ^ Fnv1a64(name));
}

std::vector<float> RandomUniform(const std::string& name, int64_t n, double lo, double hi,
                                 uint64_t seed) {
  const uint64_t key = RandomTensorKey(seed, name);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = RandomElement(key, i, lo, hi);
  return v;
}

void RandomTensors::Add(const std::string& name, std::vector<int64_t> shape, double lo, double hi) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  OwnedTensor t;
  t.name = name;
  t.dtype = dtype_;
  t.shape = std::move(shape);
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype_));
  const uint64_t key = RandomTensorKey(seed_, name);
  uint8_t* out = t.bytes.data();
  auto fill = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = RandomElement(key, i, lo, hi);
      if (dtype_ == DType::kF32) {
        std::memcpy(out + 4 * i, &v, 4);
      } else {
        const uint16_t b = F32ToBF16(v);
        std::memcpy(out + 2 * i, &b, 2);
      }
    }
  };
  // Every element is a function of its index alone, so large tensors (the 7.2B shape has 7e9
  // elements) are filled by all cores, with the same bytes.
  constexpr int64_t kPerThread = int64_t{1} << 22;
  const int64_t threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()),
                                            (n + kPerThread - 1) / kPerThread);
  if (threads <= 1) {
    fill(0, n);
  } else {
    std::vector<std::thread> pool;
    for (int64_t k = 0; k < threads; ++k) {
      pool.emplace_back(fill, n * k / threads, n * (k + 1) / threads);
    }
    for (std::thread& th : pool) th.join();
  }
  tensors_.push_back(std::move(t));
}

void RandomTensors::LayerNorm(const std::string& name, int64_t d) {
  Add(name + ".weight", {d}, 0.8, 1.2);
  Add(name + ".bias", {d}, -0.1, 0.1);
}

void RandomTensors::Linear(const std::string& name, int64_t out, int64_t in, bool bias) {
  Add(name + ".weight", {out, in}, -FanInBound(in), FanInBound(in));
  if (bias) Add(name + ".bias", {out}, -0.1, 0.1);
}

absl::StatusOr<std::vector<OwnedTensor>> MakeRandomRwkv7(const RandomModelSpec& spec) {
  if (auto st = spec.Validate(); !st.ok()) return st;
  const int64_t C = spec.n_embd, V = spec.vocab_size, H = C / 64, N = 64, F = 4 * C;
  const LoraRanks d = LoraRanksFor(spec.n_embd);
  RandomTensors b(spec.seed, spec.dtype);
  b.Add("emb.weight", {V, C}, -1, 1);
  for (int i = 0; i < spec.n_layer; ++i) {
    const std::string p = absl::StrCat("blocks.", i, ".");
    if (i == 0) b.LayerNorm(p + "ln0", C);
    b.LayerNorm(p + "ln1", C);
    b.LayerNorm(p + "ln2", C);
    for (const char* x : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) {
      b.Add(p + "att." + x, {1, 1, C}, 0, 1);
    }
    b.Add(p + "att.w0", {1, 1, C}, -2, 2);
    b.Add(p + "att.a0", {1, 1, C}, -1, 1);
    b.Add(p + "att.v0", {1, 1, C}, -1, 1);
    b.Add(p + "att.k_k", {1, 1, C}, 0.5, 1);
    b.Add(p + "att.k_a", {1, 1, C}, 0.5, 1.5);
    b.Add(p + "att.r_k", {H, N}, -0.5, 0.5);
    const std::pair<char, int> loras[] = {{'w', d.w}, {'a', d.a}, {'v', d.v}, {'g', d.g}};
    for (const auto& [x, rank] : loras) {
      b.Add(absl::StrCat(p, "att.", std::string(1, x), "1"), {C, rank}, -FanInBound(C),
            FanInBound(C));
      b.Add(absl::StrCat(p, "att.", std::string(1, x), "2"), {rank, C}, -FanInBound(rank),
            FanInBound(rank));
    }
    for (const char* m : {"receptance", "key", "value", "output"}) {
      b.Add(absl::StrCat(p, "att.", m, ".weight"), {C, C}, -FanInBound(C), FanInBound(C));
    }
    b.LayerNorm(p + "att.ln_x", C);
    b.Add(p + "ffn.x_k", {1, 1, C}, 0, 1);
    b.Add(p + "ffn.key.weight", {F, C}, -FanInBound(C), FanInBound(C));
    b.Add(p + "ffn.value.weight", {C, F}, -FanInBound(F), FanInBound(F));
  }
  b.LayerNorm("ln_out", C);
  b.Add("head.weight", {V, C}, -FanInBound(C), FanInBound(C));
  return b.Take();
}

std::vector<float> F32Values(const std::vector<OwnedTensor>& tensors, const std::string& name) {
  std::vector<float> v;
  for (const OwnedTensor& t : tensors) {
    if (t.name != name || t.dtype != DType::kF32) continue;
    v.resize(t.bytes.size() / 4);
    std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  }
  return v;
}

std::map<std::string, TensorView> ViewsOf(const std::vector<OwnedTensor>& tensors) {
  std::map<std::string, TensorView> views;
  for (const OwnedTensor& t : tensors) {
    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.shape = t.shape;
    v.data = t.bytes.data();
    v.nbytes = t.bytes.size();
    views.emplace(t.name, std::move(v));
  }
  return views;
}

}  // namespace modrwkv

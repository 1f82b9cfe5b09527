// The chunked WKV7 form's phases (engine/cuda/wkv_chunked.h), run on the host exactly as the
// kernel runs them, against the CPU backend's token-by-token recurrence: runs on every machine, so
// the chunked kernel's arithmetic and indexing are tested where no GPU is.
#include "engine/cuda/wkv_chunked.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/kernels.h"
#include "engine/cuda/rwkv7_math.h"
#include "gtest/gtest.h"

namespace modrwkv::cuda::wkv_chunked {
namespace {

struct Inputs {
  std::vector<float> r, w, k, v, kk, a;
};

// One head's inputs for T tokens, rows ld floats apart; kk L2-normalised as in the model, the
// decay w drawn from [w_min, 1).
Inputs RandomInputs(int T, int64_t ld, float w_min, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> sym(-1.0f, 1.0f), unit(0.0f, 1.0f), decay(w_min, 1.0f);
  const size_t size = static_cast<size_t>(std::max(T, 1)) * ld;
  Inputs in;
  for (std::vector<float>* x : {&in.r, &in.w, &in.k, &in.v, &in.kk, &in.a}) x->resize(size);
  for (size_t e = 0; e < size; ++e) {
    in.r[e] = sym(g);
    in.k[e] = sym(g);
    in.v[e] = sym(g);
    in.kk[e] = sym(g);
    in.a[e] = unit(g);
    in.w[e] = decay(g);
  }
  for (int t = 0; t < T; ++t) {
    float* p = in.kk.data() + t * ld;
    float ss = 0.0f;
    for (int j = 0; j < kN; ++j) ss += p[j] * p[j];
    for (int j = 0; j < kN; ++j) p[j] /= std::sqrt(ss);
  }
  return in;
}

// |got - want| <= 1e-5 * max(1, max |want|), element-wise. Measured: at most 4.4e-7 of the
// values' scale over 2048 tokens (decays from 0.545 or from 0.01): float rounding, in another
// order.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  float scale = 1.0f;
  for (float x : want) scale = std::max(scale, std::fabs(x));
  const float tol = 1e-5f * scale;
  int bad = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    if (!(std::fabs(got[e] - want[e]) <= tol) && bad++ < 5) {
      ADD_FAILURE() << what << "[" << e << "]: chunked " << got[e] << " token by token " << want[e]
                    << " (tolerance " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

struct Case {
  int T;
  float w_min;
};

void PrintTo(const Case& c, std::ostream* os) { *os << "T=" << c.T << " w_min=" << c.w_min; }

class ChunkedWkvTest : public testing::TestWithParam<Case> {};

template <int kRows>
void CompareWithTheWalk(const Case& c) {
  SCOPED_TRACE(std::to_string(kRows) + " rows per block");
  const int64_t ld = kN + 5, ldy = kN + 3;  // padded rows, unlike each other
  const Inputs in = RandomInputs(c.T, ld, c.w_min, 77 + c.T);
  std::mt19937 g(9);
  std::uniform_real_distribution<float> d(-0.5f, 0.5f);
  std::vector<float> state(kN * kN);
  for (float& x : state) x = d(g);
  std::vector<float> y(static_cast<size_t>(std::max(c.T, 1)) * ldy, -7.0f);

  std::vector<float> state_want = state, y_want = y;
  cpu::scalar::WkvHead(state_want.data(), c.T, in.r.data(), in.w.data(), in.k.data(), in.v.data(),
                       in.kk.data(), in.a.data(), ld, y_want.data(), ldy);
  EmulateChunkedHead<kRows>(state.data(), c.T, in.r.data(), in.w.data(), in.k.data(), in.v.data(),
                            in.kk.data(), in.a.data(), ld, y.data(), ldy);
  ExpectClose(state, state_want, "state");
  ExpectClose(y, y_want, "y");  // the padding columns must stay -7
}

TEST_P(ChunkedWkvTest, MatchesTheTokenByTokenRecurrence) {
  CompareWithTheWalk<64>(GetParam());
  CompareWithTheWalk<32>(GetParam());
  CompareWithTheWalk<16>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Lengths, ChunkedWkvTest,
    testing::Values(Case{0, 0.545f}, Case{1, 0.545f}, Case{5, 0.545f}, Case{15, 0.545f},
                    Case{16, 0.545f}, Case{17, 0.545f}, Case{33, 0.545f}, Case{300, 0.545f},
                    // The smallest decay the form is documented for, over whole chunks.
                    Case{64, 0.01f}),
    [](const testing::TestParamInfo<Case>& info) {
      // (Appended, not `"T" + std::to_string(...)`: g++ 12 warns about that form, -Wrestrict.)
      std::string name = "T";
      name += std::to_string(info.param.T);
      if (info.param.w_min < 0.5f) name += "SmallDecay";
      return name;
    });

// A sequence ending inside a chunk: its inputs past the end (NaN here) are never staged, the
// phases read only what was (the emulation's shared memory starts as NaN too), and no output row
// past the end is written.
TEST(ChunkedWkvTest, TokensPastTheEndAreNeverRead) {
  const int T = 21;  // a whole chunk and 5 tokens
  const int64_t ld = kN;
  Inputs in = RandomInputs(32, ld, 0.545f, 5);
  for (std::vector<float>* x : {&in.r, &in.w, &in.k, &in.v, &in.kk, &in.a}) {
    std::fill(x->begin() + T * ld, x->end(), std::nanf(""));
  }
  std::vector<float> state(kN * kN, 0.25f), y(32 * ld, 0.0f);
  EmulateChunkedHead<64>(state.data(), T, in.r.data(), in.w.data(), in.k.data(), in.v.data(),
                         in.kk.data(), in.a.data(), ld, y.data(), ld);
  for (float x : state) ASSERT_TRUE(std::isfinite(x));
  for (int e = 0; e < T * ld; ++e) ASSERT_TRUE(std::isfinite(y[e])) << e;
  for (int e = T * ld; e < 32 * ld; ++e) ASSERT_EQ(y[e], 0.0f) << "row past the end written";
}

// The raw form (a prefill step's rows before preparation): the rows prepared here with the
// model's functions (rwkv7_math.h, as LaunchPrepareWkv), then walked token by token, against the
// emulated kernel preparing each chunk itself; and the prepared k, v (and v_first) it writes.
template <int kRows>
void CompareRawWithTheWalk(int T, bool first_layer) {
  SCOPED_TRACE(std::to_string(kRows) + " rows per block, T = " + std::to_string(T) +
               (first_layer ? ", first layer" : ", later layer"));
  const int64_t ld = kN + 3;
  const size_t size = static_cast<size_t>(std::max(T, 1)) * ld;
  std::mt19937 g(31 + T);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f), wide(-3.0f, 3.0f);
  std::vector<float> raw[kRawInputs];
  for (int p = 0; p < kRawInputs; ++p) {
    raw[p].resize(size);
    for (float& x : raw[p]) x = p == kW || p == kA || p == kVGate ? wide(g) : d(g);
  }
  RawChannel channels[kN];
  for (RawChannel& c : channels) c = {d(g), d(g), d(g), d(g), first_layer ? 0.0f : d(g)};
  std::vector<float> state(kN * kN);
  for (float& x : state) x = 0.5f * d(g);

  // The reference: prepared rows, then the recurrence.
  std::vector<float> pw(size), pa(size), pk(size), pkk(size), pv(size), v_first_want(size, -7.0f);
  for (int t = 0; t < T; ++t) {
    float ss = 0.0f;
    for (int j = 0; j < kN; ++j) {
      const int64_t e = t * ld + j;
      const RawChannel& c = channels[j];
      pw[e] = math::Decay(raw[kW][e] + c.w0);
      pa[e] = math::Sigmoid(raw[kA][e] + c.a0);
      pk[e] = math::KeyWithIclr(raw[kK][e], pa[e], c.k_a);
      pkk[e] = raw[kK][e] * c.k_k;
      ss += pkk[e] * pkk[e];
      pv[e] = first_layer ? raw[kV][e]
                          : math::ValueResidual(raw[kV][e], raw[kVFirst][e], raw[kVGate][e] + c.v0);
      if (first_layer) v_first_want[e] = raw[kV][e];
    }
    for (int j = 0; j < kN; ++j) pkk[t * ld + j] *= math::InvL2(ss);
  }
  std::vector<float> state_want = state, y_want(size, -7.0f);
  cpu::scalar::WkvHead(state_want.data(), T, raw[kR].data(), pw.data(), pk.data(), pv.data(),
                       pkk.data(), pa.data(), ld, y_want.data(), ld);

  std::vector<float> y(size, -7.0f), k_out(size, -7.0f), v_out(size, -7.0f), v_first(size, -7.0f);
  const float* src[kRawInputs];
  for (int p = 0; p < kRawInputs; ++p) src[p] = raw[p].data();
  EmulateChunkedHeadRaw<kRows>(state.data(), T, src, ld, first_layer, channels,
                               RawOut{k_out.data(), v_out.data(), v_first.data(), ld}, y.data(),
                               ld);
  ExpectClose(state, state_want, "state");
  ExpectClose(y, y_want, "y");
  // Written only in the head's 64 columns of the T rows (the padding columns stay -7).
  auto only_rows = [&](std::vector<float> want) {
    for (size_t e = 0; e < size; ++e) {
      if (static_cast<int64_t>(e) % ld >= kN || static_cast<int64_t>(e) >= T * ld) want[e] = -7.0f;
    }
    return want;
  };
  ExpectClose(k_out, only_rows(pk), "k'");
  ExpectClose(v_out, only_rows(pv), "v'");
  ExpectClose(v_first, only_rows(v_first_want), "v_first");
}

TEST(ChunkedWkvTest, RawRowsPreparedPerChunkMatchThePreparedWalk) {
  for (const int T : {0, 1, 15, 16, 17, 40}) {
    for (const bool first : {true, false}) {
      CompareRawWithTheWalk<64>(T, first);
      CompareRawWithTheWalk<32>(T, first);
      CompareRawWithTheWalk<16>(T, first);
    }
  }
}

}  // namespace
}  // namespace modrwkv::cuda::wkv_chunked

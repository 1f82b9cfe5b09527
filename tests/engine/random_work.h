// Two backends side by side through a long seeded run of random work, as a scheduler hands it to
// a backend over time: steps of any mix (decode tokens, prompt chunks of 2-40 tokens, embedding
// rows with or without tokens after them; logits, hidden rows, nothing, or a greedy token picked
// by the backend), decode steps of 1 to all slots again and again (on a GPU: every batch bucket
// run eagerly, captured and replayed), and between them every slot operation (copy, reset,
// offload into a cold state, restore of any cold state into any slot with the cold state dropped
// at once or kept, a slot exported from each backend and imported into the other). Each output
// of every step is compared with the reference's, and every slot every 8 operations and at the
// end: bit for bit (`exact`) or within the bounds given. The reference may run each step's
// entries one at a time, which checks that batching changes nothing.
//
// Used by the CPU backend's batch-invariance test (tests/engine/cpu/cpu_model_test.cc) and the
// GPU backend's test against the CPU (tests/engine/cuda/cuda_random_steps_check.cc).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/model/cold_state.h"
#include "engine/model/model.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/engine/compare.h"
#include "tests/engine/f16_state.h"

namespace modrwkv::testing_util {

struct RandomWorkOptions {
  std::string name;  // in every failure message
  uint64_t seed = 1;
  int operations = 64;
  // Bit for bit, or: outputs (logits, hidden rows) within `tol` and slot states within
  // `state_tol` of the reference's standard deviation (RelErr), and greedy tokens equal where
  // the reference's best two logits are more than 4 * tol standard deviations apart.
  bool exact = false;
  double tol = 0, state_tol = 0;
  // The subject keeps f16 state slots: the reference's stepped slots are rounded to f16 after
  // each step, as the subject stores them (tests/engine/f16_state.h).
  bool f16_states = false;
  // The reference runs each step's entries one at a time, in order.
  bool reference_entry_by_entry = false;
};

class RandomWork {
 public:
  // Both models have the same weights and at least 2 slots; their slots are used as they are.
  RandomWork(const RandomWorkOptions& options, Model& reference, Model& subject)
      : options_(options),
        ref_(reference),
        sub_(subject),
        slots_(std::min(reference.num_slots(), subject.num_slots())),
        vocab_(reference.config().vocab_size),
        rng_(options.seed) {
    SamplerConfig greedy;
    greedy.temperature = 0;
    for (int s = 0; s < slots_; ++s) {
      ref_samplers_.push_back(Sampler::Create(greedy, vocab_).value());
      sub_samplers_.push_back(Sampler::Create(greedy, vocab_).value());
    }
  }

  void Run() {
    for (op_ = 0; op_ < options_.operations && !::testing::Test::HasFatalFailure(); ++op_) {
      const int pick = Uniform(0, 99);
      if (pick < 40) {
        MixedStep();
      } else if (pick < 65) {
        DecodeStep();
      } else if (pick < 72) {
        Copy();
      } else if (pick < 77) {
        Reset();
      } else if (pick < 85) {
        Offload();
      } else if (pick < 93) {
        Restore();
      } else {
        ExportImport();
      }
      if (op_ % 8 == 7) ExpectSameSlots();
    }
    ExpectSameSlots();
    // In the test's XML report (--gtest_output=xml), per run.
    auto record = [&](const char* what, double v) {
      ::testing::Test::RecordProperty(absl::StrCat(options_.name, "_", what), absl::StrCat(v));
    };
    record("worst_output_error", worst_);
    record("worst_state_error", worst_state_);
    record("steps", steps_);
    record("greedy_tokens_compared", tokens_compared_);
  }

 private:
  // One cold state of the same slot at the same moment, on both backends.
  struct ColdPair {
    std::unique_ptr<ColdState> ref, sub;
  };

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // k distinct slots in random order.
  std::vector<int> Slots(int k) {
    std::vector<int> all(slots_);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng_);
    all.resize(k);
    return all;
  }

  absl::Span<const int32_t> Tokens(int n) {
    inputs_tokens_.emplace_back(n);
    for (int32_t& t : inputs_tokens_.back()) t = Uniform(0, vocab_ - 1);
    return inputs_tokens_.back();
  }

  absl::Span<const float> Rows(int n) {
    inputs_rows_.emplace_back(static_cast<size_t>(n) * ref_.config().n_embd);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    for (float& v : inputs_rows_.back()) v = normal(rng_);
    return inputs_rows_.back();
  }

  StepOutput AnyOutput(bool hidden_allowed) {
    const int pick = Uniform(0, 99);
    if (pick < 45) return StepOutput::kLogits;
    if (pick < 65) return StepOutput::kNone;
    if (pick < 85 || !hidden_allowed) return StepOutput::kSample;
    return StepOutput::kHidden;
  }

  // Sequences of every kind in one step: decode tokens, prompt chunks from 2 to 40 tokens (long
  // enough, alone, for a GPU's chunked recurrence), embedding rows with or without tokens after.
  void MixedStep() {
    std::vector<StepEntry> entries;
    for (int slot : Slots(Uniform(1, slots_))) {
      StepEntry e;
      e.slot = slot;
      const int kind = Uniform(0, 99);
      if (kind < 40) {
        e.inputs = {InputRowsView::Tokens(Tokens(1))};
      } else if (kind < 80) {
        e.inputs = {InputRowsView::Tokens(Tokens(Uniform(2, 40)))};
      } else {
        e.inputs = {InputRowsView::Embeddings(Rows(Uniform(1, 6)))};
        if (Uniform(0, 1) == 1) e.inputs.push_back(InputRowsView::Tokens(Tokens(Uniform(1, 5))));
      }
      e.output = AnyOutput(/*hidden_allowed=*/true);
      entries.push_back(std::move(e));
    }
    StepBoth(std::move(entries));
  }

  // One token for each of 1 to all sequences, no hidden rows: a decode step (on a GPU padded to
  // its bucket and run eagerly, captured or replayed from the bucket's graph).
  void DecodeStep() {
    std::vector<StepEntry> entries;
    for (int slot : Slots(Uniform(1, slots_))) {
      StepEntry e;
      e.slot = slot;
      e.inputs = {InputRowsView::Tokens(Tokens(1))};
      e.output = AnyOutput(/*hidden_allowed=*/false);
      entries.push_back(std::move(e));
    }
    StepBoth(std::move(entries));
  }

  // The reference's results of `entries`, run together or one at a time (each result's spans
  // copied out before the next step invalidates them).
  struct Owned {
    std::vector<float> logits, hidden;
    int32_t token = -1;
  };
  std::vector<Owned> RunReference(const std::vector<StepEntry>& entries) {
    std::vector<Owned> out;
    auto keep = [&](const std::vector<StepResult>& results) {
      for (const StepResult& r : results) {
        out.push_back(
            {{r.logits.begin(), r.logits.end()}, {r.hidden.begin(), r.hidden.end()}, r.token});
      }
    };
    std::vector<StepResult> results;
    if (!options_.reference_entry_by_entry) {
      const absl::Status st = ref_.Step(entries, &results);
      EXPECT_TRUE(st.ok()) << Where() << st;
      if (st.ok()) keep(results);
      return out;
    }
    for (const StepEntry& e : entries) {
      const absl::Status st = ref_.Step({e}, &results);
      EXPECT_TRUE(st.ok()) << Where() << st;
      if (!st.ok()) return {};
      keep(results);
    }
    return out;
  }

  void StepBoth(std::vector<StepEntry> entries) {
    ++steps_;
    std::vector<StepEntry> ref_entries = entries;
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].output != StepOutput::kSample) continue;
      ref_entries[i].sampler = ref_samplers_[entries[i].slot].get();
      entries[i].sampler = sub_samplers_[entries[i].slot].get();
    }
    const std::vector<Owned> r = RunReference(ref_entries);
    ASSERT_EQ(r.size(), entries.size()) << Where();
    std::vector<StepResult> s;
    const absl::Status st = sub_.Step(entries, &s);
    ASSERT_TRUE(st.ok()) << Where() << st;
    ASSERT_EQ(s.size(), entries.size());
    if (options_.f16_states) {
      for (const StepEntry& e : entries) ASSERT_TRUE(RoundSlotToF16(ref_, e.slot).ok()) << Where();
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string what = absl::StrCat(Where(), "entry ", i, " (slot ", entries[i].slot, ")");
      switch (entries[i].output) {
        case StepOutput::kLogits:
          ASSERT_EQ(s[i].logits.size(), static_cast<size_t>(vocab_)) << what;
          ExpectClose(r[i].logits, s[i].logits, options_.tol, &worst_, what);
          break;
        case StepOutput::kHidden:
          ASSERT_EQ(s[i].hidden.size(), r[i].hidden.size()) << what;
          ExpectClose(r[i].hidden, s[i].hidden, options_.tol, &worst_, what);
          break;
        case StepOutput::kSample:
          ExpectSameGreedyToken(r[i], s[i], what);
          break;
        case StepOutput::kNone:
          EXPECT_TRUE(s[i].logits.empty() && s[i].hidden.empty()) << what;
          break;
      }
    }
    inputs_tokens_.clear();
    inputs_rows_.clear();
  }

  // Bit for bit, or within `tol` (RelErr); the error joins `*worst` either way.
  void ExpectClose(absl::Span<const float> ref, absl::Span<const float> sub, double tol,
                   double* worst, const std::string& what) {
    const double err = RelErr(ref, sub);
    *worst = std::max(*worst, err);
    if (options_.exact) {
      EXPECT_TRUE(std::equal(ref.begin(), ref.end(), sub.begin(), sub.end())) << what << err;
    } else {
      EXPECT_LT(err, tol) << what;
    }
  }

  void ExpectCloseStates(absl::Span<const float> ref, absl::Span<const float> sub, int slot) {
    ExpectClose(ref, sub, options_.state_tol, &worst_state_,
                absl::StrCat(Where(), "slot ", slot, ": "));
  }

  // Greedy tokens: equal, or, within bounds, equal wherever the reference's best two logits are
  // further apart than the backends' difference can bridge (both within tol of the logits'
  // standard deviation).
  void ExpectSameGreedyToken(const Owned& r, const StepResult& s, const std::string& what) {
    ASSERT_EQ(r.logits.size(), static_cast<size_t>(vocab_)) << what;
    ASSERT_GE(s.token, 0) << what;
    ASSERT_LT(s.token, vocab_) << what;
    if (!options_.exact) {
      float best = -INFINITY, second = -INFINITY;
      for (float v : r.logits) {
        second = std::max(second, std::min(best, v));
        best = std::max(best, v);
      }
      if (best - second <= 4 * options_.tol * StdDev(r.logits)) return;  // too close to call
    }
    ++tokens_compared_;
    EXPECT_EQ(s.token, r.token) << what;
  }

  void Copy() {
    const std::vector<int> s = Slots(2);
    ASSERT_TRUE(ref_.CopySlot(s[0], s[1]).ok()) << Where();
    const absl::Status st = sub_.CopySlot(s[0], s[1]);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  void Reset() {
    const int slot = Uniform(0, slots_ - 1);
    ASSERT_TRUE(ref_.ResetSlot(slot).ok()) << Where();
    const absl::Status st = sub_.ResetSlot(slot);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  // A slot's state into the cold tier; the slot itself is left as it is, to be stepped on,
  // reset or overwritten by what follows. At most 4 cold states are kept: a fifth drops the
  // oldest (on a GPU its pinned buffer goes back to the spares, perhaps with its copy queued).
  void Offload() {
    const int slot = Uniform(0, slots_ - 1);
    auto r = ref_.OffloadSlot(slot);
    ASSERT_TRUE(r.ok()) << Where() << r.status();
    auto s = sub_.OffloadSlot(slot);
    ASSERT_TRUE(s.ok()) << Where() << s.status();
    cold_.push_back({std::move(*r), std::move(*s)});
    if (cold_.size() > 4) cold_.erase(cold_.begin());
  }

  // A cold state into any slot; then, half the time, dropped at once (its restore may still be
  // queued behind the slot's earlier work).
  void Restore() {
    if (cold_.empty()) return Offload();
    const size_t i = Uniform(0, static_cast<int>(cold_.size()) - 1);
    const int slot = Uniform(0, slots_ - 1);
    ASSERT_TRUE(ref_.RestoreSlot(slot, *cold_[i].ref).ok()) << Where();
    const absl::Status st = sub_.RestoreSlot(slot, *cold_[i].sub);
    ASSERT_TRUE(st.ok()) << Where() << st;
    if (Uniform(0, 1) == 1) cold_.erase(cold_.begin() + i);
  }

  // A session moved between backends: each backend's export of a slot imported into the other
  // backend's slot (another one, or the same).
  void ExportImport() {
    const int from = Uniform(0, slots_ - 1), to = Uniform(0, slots_ - 1);
    const int64_t n = ref_.config().StateFloats();
    std::vector<float> r(n), s(n);
    ASSERT_TRUE(ref_.ReadSlot(from, absl::MakeSpan(r)).ok()) << Where();
    ASSERT_TRUE(sub_.ReadSlot(from, absl::MakeSpan(s)).ok()) << Where();
    ExpectCloseStates(r, s, from);
    ASSERT_TRUE(ref_.WriteSlot(to, s).ok()) << Where();
    const absl::Status st = sub_.WriteSlot(to, r);
    ASSERT_TRUE(st.ok()) << Where() << st;
  }

  void ExpectSameSlots() {
    const int64_t n = ref_.config().StateFloats();
    std::vector<float> r(n), s(n);
    for (int slot = 0; slot < slots_; ++slot) {
      ASSERT_TRUE(ref_.ReadSlot(slot, absl::MakeSpan(r)).ok()) << Where();
      const absl::Status st = sub_.ReadSlot(slot, absl::MakeSpan(s));
      ASSERT_TRUE(st.ok()) << Where() << st;
      ExpectCloseStates(r, s, slot);
    }
  }

  std::string Where() const { return absl::StrCat(options_.name, ", operation ", op_, ": "); }

  const RandomWorkOptions& options_;
  Model& ref_;
  Model& sub_;
  const int slots_, vocab_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Sampler>> ref_samplers_, sub_samplers_;
  std::vector<std::vector<int32_t>> inputs_tokens_;  // a step's inputs, alive until it returns
  std::vector<std::vector<float>> inputs_rows_;
  std::vector<ColdPair> cold_;
  int op_ = 0, steps_ = 0, tokens_compared_ = 0;
  double worst_ = 0, worst_state_ = 0;
};

}  // namespace modrwkv::testing_util

// The state pool on its own, over a real tiny CPU model: the cold-tier bound, its eviction order,
// what a full tier does, pinning, the per-owner quota and the TTL. Every case that once freed a
// session still in use is here; run under ASan they fail loudly if it comes back.
#include "engine/serving/state_pool.h"

#include <algorithm>
#include <string>
#include <vector>

#include "engine/base/errors.h"
#include "engine/checkpoint/random_weights.h"
#include "engine/loader/model_loader.h"
#include "engine/serving/scheduler.h"
#include "gtest/gtest.h"
#include "tests/engine/serving/forwarding_model.h"

namespace modrwkv {
namespace {

class CountingObserver : public SchedulerObserver {
 public:
  void OnSessionEvicted(std::string_view why) override { (why == "ttl" ? ttl : capacity) += 1; }
  void OnSessionOffload(bool to_cold) override { (to_cold ? to_cold_n : to_hot_n) += 1; }
  int capacity = 0, ttl = 0, to_cold_n = 0, to_hot_n = 0;
};

// A model whose slot copies and writes fail on demand, as a failing device's would.
class SlotFailingModel final : public ForwardingModel {
 public:
  using ForwardingModel::ForwardingModel;
  absl::Status CopySlot(int src, int dst) override {
    return fail_copy ? absl::InternalError("copy failed") : ForwardingModel::CopySlot(src, dst);
  }
  absl::Status WriteSlot(int slot, absl::Span<const float> in) override {
    return fail_write ? absl::InternalError("write failed") : ForwardingModel::WriteSlot(slot, in);
  }
  bool fail_copy = false, fail_write = false;
};

class StatePoolTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    RandomModelSpec spec;
    spec.n_layer = 1;
    spec.n_embd = 64;
    spec.vocab_size = 64;
    spec.seed = 11;
    tensors_ = new std::vector<OwnedTensor>(MakeRandomRwkv7(spec).value());
  }
  static void TearDownTestSuite() { delete tensors_; }

  void Build(int slots, StatePoolOptions o) {
    ModelOptions mo;
    mo.num_slots = slots;
    mo.threads = 1;
    mo.weight_type = ModelOptions::WeightType::kF32;
    auto failing = std::make_unique<SlotFailingModel>(CreateModel(ViewsOf(*tensors_), mo).value());
    failing_ = failing.get();
    model_ = std::move(failing);
    pool_ = std::make_unique<StatePool>(model_.get(), o, &obs_);
  }

  static StatePoolOptions Cap(int max_cold, int per_owner = 0) {
    StatePoolOptions o;
    o.max_cold_sessions = max_cold;
    o.max_sessions_per_owner = per_owner;
    return o;
  }

  // A recognisable state: every float = `v`.
  std::vector<float> Filled(float v) const {
    return std::vector<float>(model_->config().StateFloats(), v);
  }
  // A cold session's state in host memory, every float = `v`.
  std::unique_ptr<ColdState> Cold(float v) const {
    return std::make_unique<HostColdState>(Filled(v));
  }

  PooledSession* Make(const std::string& owner, absl::Time last_used) {
    PooledSession* s = pool_->Create(owner).value();
    s->last_used = last_used;
    return s;
  }

  bool Alive(SessionId id, const std::string& owner) { return pool_->Knows(id, owner); }

  static absl::Time T(int seconds) { return absl::FromUnixSeconds(1'700'000'000 + seconds); }

  static std::vector<OwnedTensor>* tensors_;
  std::unique_ptr<Model> model_;
  SlotFailingModel* failing_ = nullptr;  // model_, to make its slot operations fail
  CountingObserver obs_;
  std::unique_ptr<StatePool> pool_;
};
std::vector<OwnedTensor>* StatePoolTest::tensors_ = nullptr;

TEST_F(StatePoolTest, ResumingAColdSessionWhenEverySlotHoldsAnIdleHotOneKeepsIt) {
  // One slot held by an idle hot session; the tier holds one session. Resuming the cold one
  // pushes the hot one out: the tier briefly holds both, and must not delete the one resumed.
  Build(/*slots=*/1, Cap(1));
  PooledSession* hot = Make("a", T(10));
  ASSERT_TRUE(pool_->MakeHot(hot).ok());
  PooledSession* cold = Make("a", T(5));  // older than `hot`: the LRU choice if it were evictable
  auto st = Filled(0.25f);
  cold->cold = std::make_unique<HostColdState>(st);
  const SessionId cold_id = cold->id, hot_id = hot->id;

  ASSERT_TRUE(pool_->MakeHot(cold).ok());
  EXPECT_EQ(cold->slot, 0);  // `cold` is still a live object (ASan would catch a freed one)
  auto now = pool_->StateOf(*cold);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(*now, st);
  EXPECT_TRUE(Alive(cold_id, "a"));
  EXPECT_TRUE(Alive(hot_id, "a"));  // offloaded to the tier, which now holds exactly one
  EXPECT_EQ(pool_->cold_sessions(), 1);
  EXPECT_EQ(obs_.capacity, 0);
}

TEST_F(StatePoolTest, ForkOfAColdSessionWithAFullTierEvictsAnotherIdleSession) {
  Build(/*slots=*/1, Cap(2));
  PooledSession* other = Make("a", T(1));
  PooledSession* src = Make("a", T(2));
  src->cold = Cold(0.5f);
  src->pending_token = 7;
  const SessionId other_id = other->id;
  auto dst = pool_->Fork(src);
  ASSERT_TRUE(dst.ok()) << dst.status();
  EXPECT_FALSE(Alive(other_id, "a"));  // the only idle session that was not part of the fork
  EXPECT_EQ(obs_.capacity, 1);
  EXPECT_EQ((*dst)->pending_token, 7);
  EXPECT_EQ(pool_->StateOf(**dst).value(), Filled(0.5f));
  EXPECT_EQ(pool_->StateOf(*src).value(), Filled(0.5f));
}

TEST_F(StatePoolTest, ForkWithNothingToEvictTakesAFreeSlotOrIsRefused) {
  Build(/*slots=*/1, Cap(1));
  PooledSession* src = Make("a", T(1));
  src->cold = Cold(0.75f);
  auto dst = pool_->Fork(src);  // tier: src + dst > 1, nothing else idle: dst goes to the slot
  ASSERT_TRUE(dst.ok()) << dst.status();
  EXPECT_GE((*dst)->slot, 0);
  EXPECT_EQ(pool_->StateOf(**dst).value(), Filled(0.75f));
  (*dst)->busy = true;  // the only slot is now in use by a request
  auto refused = pool_->Fork(src);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(refused.status()), reason::kSessionTierFull);
  EXPECT_NE(refused.status().message().find("max_cold_sessions"), std::string::npos);
  EXPECT_TRUE(Alive(src->id, "a"));
  EXPECT_EQ(pool_->sessions_of("a"), 2);  // the refused copy is gone, nothing else
}

TEST_F(StatePoolTest, ForkOfAHotSessionCopiesIntoAFreeSlotElseOffloads) {
  Build(/*slots=*/2, Cap(4));
  PooledSession* src = Make("a", T(1));
  src->cold = Cold(0.5f);
  ASSERT_TRUE(pool_->MakeHot(src).ok());
  ASSERT_TRUE(model_->WriteSlot(src->slot, Filled(0.625f)).ok());
  auto in_slot = pool_->Fork(src);  // one slot free: a copy inside the pool
  ASSERT_TRUE(in_slot.ok()) << in_slot.status();
  EXPECT_GE((*in_slot)->slot, 0);
  EXPECT_NE((*in_slot)->slot, src->slot);
  EXPECT_EQ(pool_->StateOf(**in_slot).value(), Filled(0.625f));
  (*in_slot)->busy = true;  // no slot can be freed now
  auto offloaded = pool_->Fork(src);
  ASSERT_TRUE(offloaded.ok()) << offloaded.status();
  EXPECT_LT((*offloaded)->slot, 0);
  ASSERT_NE((*offloaded)->cold, nullptr);
  EXPECT_EQ(pool_->StateOf(**offloaded).value(), Filled(0.625f));
  ASSERT_TRUE(model_->WriteSlot(src->slot, Filled(-1.0f)).ok());  // src moves on, its copies not
  EXPECT_EQ(pool_->StateOf(**offloaded).value(), Filled(0.625f));
  EXPECT_EQ(pool_->StateOf(**in_slot).value(), Filled(0.625f));
  EXPECT_EQ(obs_.to_cold_n, 0);  // neither fork moved a session out of its slot
}

TEST_F(StatePoolTest, TiersCountSessionsAndTheColdTiersHostMemory) {
  Build(/*slots=*/1, Cap(4));
  PooledSession* a = Make("a", T(1));  // cold, the zero state: no memory
  PooledSession* b = Make("a", T(2));
  b->cold = Cold(0.5f);
  StatePool::TierStats t = pool_->Tiers();
  EXPECT_EQ(t.hot, 0);
  EXPECT_EQ(t.cold, 2);
  EXPECT_EQ(t.host_bytes, model_->StateBytes());
  ASSERT_TRUE(pool_->MakeHot(b).ok());
  b->busy = true;
  ASSERT_TRUE(pool_->BeginTurn(b).ok());  // no spare slot: the start goes to host memory
  t = pool_->Tiers();
  EXPECT_EQ(t.hot, 1);
  EXPECT_EQ(t.cold, 1);
  EXPECT_EQ(t.host_bytes, model_->StateBytes());  // b's turn start; a still holds nothing
  pool_->EndTurn(b);
  EXPECT_EQ(pool_->Tiers().host_bytes, 0);
  EXPECT_EQ(pool_->cold_sessions(), 1);
  EXPECT_EQ(a->slot, -1);
}

TEST_F(StatePoolTest, WithACapOfZeroNewSessionsLiveInSlotsOrAreRefused) {
  Build(/*slots=*/2, Cap(0));
  auto a = pool_->Create("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GE((*a)->slot, 0);
  EXPECT_EQ(pool_->StateOf(**a).value(), Filled(0.0f));
  auto imported = pool_->Import(Filled(0.125f), 9, 3, "a");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_GE((*imported)->slot, 0);
  EXPECT_EQ(pool_->StateOf(**imported).value(), Filled(0.125f));
  EXPECT_EQ((*imported)->tokens, 9);
  (*a)->busy = (*imported)->busy = true;
  auto c = pool_->Create("a");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  auto i2 = pool_->Import(Filled(1.0f), 1, -1, "a");
  EXPECT_EQ(i2.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool_->sessions_of("a"), 2);
}

TEST_F(StatePoolTest, OffloadingWithACapOfZeroEvictsTheIdleHotSession) {
  Build(/*slots=*/1, Cap(0));
  PooledSession* s = pool_->Create("a").value();
  ASSERT_GE(s->slot, 0);
  const SessionId id = s->id;
  auto slot = pool_->AcquireSlot("b");  // a request needs the slot; `s` is idle
  ASSERT_TRUE(slot.has_value());
  EXPECT_FALSE(Alive(id, "a"));
  EXPECT_EQ(obs_.capacity, 1);
}

TEST_F(StatePoolTest, EvictionTakesTheActingOwnersOwnSessionsFirst) {
  Build(/*slots=*/1, Cap(3));
  PooledSession* b1 = Make("bob", T(1));  // the oldest of all
  PooledSession* a1 = Make("alice", T(2));
  PooledSession* a2 = Make("alice", T(3));
  const SessionId b1_id = b1->id, a1_id = a1->id, a2_id = a2->id;
  // Alice's new session overflows the tier: her own least recent goes, not Bob's older one.
  ASSERT_TRUE(pool_->Create("alice").ok());
  EXPECT_TRUE(Alive(b1_id, "bob"));
  EXPECT_FALSE(Alive(a1_id, "alice"));
  EXPECT_TRUE(Alive(a2_id, "alice"));
  // Carol has none to give: the least recent of anyone's goes.
  ASSERT_TRUE(pool_->Create("carol").ok());
  EXPECT_FALSE(Alive(b1_id, "bob"));
  EXPECT_EQ(obs_.capacity, 2);
}

TEST_F(StatePoolTest, BusyAndHotSessionsAreNeverEvicted) {
  Build(/*slots=*/2, Cap(1));
  PooledSession* busy = Make("a", T(1));
  ASSERT_TRUE(pool_->MakeHot(busy).ok());
  busy->busy = true;
  PooledSession* hot = Make("a", T(2));
  ASSERT_TRUE(pool_->MakeHot(hot).ok());
  PooledSession* c1 = Make("a", T(3));
  const SessionId c1_id = c1->id;
  ASSERT_TRUE(pool_->Create("a").ok());  // overflows by one: c1 is the only idle cold one
  EXPECT_FALSE(Alive(c1_id, "a"));
  EXPECT_TRUE(Alive(busy->id, "a"));
  EXPECT_TRUE(Alive(hot->id, "a"));
}

TEST_F(StatePoolTest, PerOwnerQuotaRefusesNamingTheLimit) {
  Build(/*slots=*/1, Cap(100, /*per_owner=*/2));
  PooledSession* a = pool_->Create("alice").value();
  ASSERT_TRUE(pool_->Create("alice").ok());
  auto third = pool_->Create("alice");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(third.status()), reason::kSessionQuota);
  EXPECT_NE(third.status().message().find("max_sessions_per_owner"), std::string::npos);
  EXPECT_EQ(pool_->Fork(a).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool_->Import(Filled(0), 0, -1, "alice").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(pool_->Create("bob").ok());  // others are not affected
  pool_->Delete(a);
  EXPECT_TRUE(pool_->Create("alice").ok());
}

TEST_F(StatePoolTest, ACallersOwnQuotaReplacesTheServers) {
  StatePoolOptions o = Cap(100, /*per_owner=*/2);
  o.sessions_quota_of = [](const std::string& owner) -> std::optional<int> {
    if (owner == "carol") return 1;
    if (owner == "dave") return 0;  // unbounded
    return std::nullopt;
  };
  Build(/*slots=*/1, o);
  ASSERT_TRUE(pool_->Create("carol").ok());
  auto second = pool_->Create("carol");
  EXPECT_EQ(ReasonOf(second.status()), reason::kSessionQuota);
  EXPECT_NE(second.status().message().find("its own limit"), std::string::npos);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(pool_->Create("dave").ok());
  ASSERT_TRUE(pool_->Create("erin").ok());  // the server's quota
  ASSERT_TRUE(pool_->Create("erin").ok());
  EXPECT_EQ(ReasonOf(pool_->Create("erin").status()), reason::kSessionQuota);
}

TEST_F(StatePoolTest, TtlSweepsOnlyIdleSessions) {
  StatePoolOptions o = Cap(10);
  o.session_ttl = absl::Seconds(30);
  Build(/*slots=*/1, o);
  PooledSession* old_idle = Make("a", T(0));
  PooledSession* old_busy = Make("a", T(0));
  ASSERT_TRUE(pool_->MakeHot(old_busy).ok());
  old_busy->busy = true;
  PooledSession* recent = Make("a", T(50));
  const SessionId idle_id = old_idle->id;
  pool_->Sweep(T(60));
  EXPECT_FALSE(Alive(idle_id, "a"));
  EXPECT_TRUE(Alive(old_busy->id, "a"));
  EXPECT_TRUE(Alive(recent->id, "a"));
  EXPECT_EQ(obs_.ttl, 1);
}

// With a spill hook, a session evicted for capacity hands over its state first (the scheduler
// moves it to the shared tier); one swept by its TTL does not. An import may keep a given id.
TEST_F(StatePoolTest, CapacityEvictionsSpillTheirStateAndImportsKeepAGivenId) {
  StatePoolOptions o = Cap(1);
  o.session_ttl = absl::Seconds(30);
  struct Spilled {
    SessionId id;
    std::string owner;
    std::vector<float> state;
    int64_t tokens;
    int32_t pending;
  };
  std::vector<Spilled> spilled;
  o.spill = [&](SessionId id, const std::string& owner, std::vector<float> state, int64_t tokens,
                int32_t pending) {
    spilled.push_back({id, owner, std::move(state), tokens, pending});
  };
  Build(/*slots=*/1, o);
  PooledSession* first = Make("a", T(1));
  first->cold = Cold(0.25f);
  first->tokens = 12;
  first->pending_token = 5;
  const SessionId first_id = first->id;
  Make("a", T(2));  // the tier holds one: the first goes
  ASSERT_EQ(spilled.size(), 1u);
  EXPECT_EQ(spilled[0].id, first_id);
  EXPECT_EQ(spilled[0].owner, "a");
  EXPECT_EQ(spilled[0].state, Filled(0.25f));
  EXPECT_EQ(spilled[0].tokens, 12);
  EXPECT_EQ(spilled[0].pending, 5);
  EXPECT_FALSE(Alive(first_id, "a"));

  // Back under its own id (the other idle session goes out in turn).
  auto back = pool_->Import(spilled[0].state, 12, 5, "a", first_id);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->id, first_id);
  EXPECT_EQ(pool_->StateOf(**back).value(), Filled(0.25f));
  EXPECT_EQ(spilled.size(), 2u);
  auto twice = pool_->Import(Filled(0), 0, -1, "a", first_id);
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kAlreadyExists);

  (*back)->last_used = T(0);
  pool_->Sweep(T(60));  // expired: deleted, not spilled
  EXPECT_FALSE(Alive(first_id, "a"));
  EXPECT_EQ(spilled.size(), 2u);
}

// New ids (created, forked, imported without an id) carry the pool's routing hint; an import
// under a given id keeps that id, whatever replica made it.
TEST_F(StatePoolTest, NewIdsStartWithTheRoutingHint) {
  StatePoolOptions o = Cap(8);
  o.session_routing_hint = 0xabcdef01u;
  Build(/*slots=*/1, o);
  EXPECT_EQ(pool_->Create("a").value()->id.routing_hint(), 0xabcdef01u);
  EXPECT_EQ(pool_->Import(Filled(0), 0, -1, "a", std::nullopt).value()->id.routing_hint(),
            0xabcdef01u);
  const SessionId foreign = SessionId::Random(0x12345678u);
  EXPECT_EQ(pool_->Import(Filled(0), 0, -1, "a", foreign).value()->id, foreign);
}

TEST_F(StatePoolTest, FindIsOwnerScoped) {
  Build(/*slots=*/1, Cap(4));
  PooledSession* s = pool_->Create("alice").value();
  EXPECT_TRUE(pool_->Find(s->id, "alice").ok());
  auto other = pool_->Find(s->id, "mallory");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(other.status()), reason::kSessionNotFound);
}

// A turn's start goes to a spare slot when one is free (slots_used counts it) and comes back
// exactly on RollBack, pending token too; EndTurn keeps the new state and frees the slot.
TEST_F(StatePoolTest, ATurnsStartInASpareSlotIsRestoredExactly) {
  Build(/*slots=*/2, Cap(4));
  PooledSession* s = Make("a", T(1));
  s->cold = Cold(0.25f);
  s->pending_token = 5;
  ASSERT_TRUE(pool_->MakeHot(s).ok());
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  EXPECT_EQ(pool_->turns_in_slots(), 1);
  EXPECT_EQ(pool_->slots_used(), 2);
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(-3.0f)).ok());  // the turn's work
  s->pending_token = 9;
  ASSERT_TRUE(pool_->RollBack(s).ok());
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(0.25f));
  EXPECT_EQ(s->pending_token, 5);
  EXPECT_EQ(pool_->turns_in_slots(), 0);
  EXPECT_EQ(pool_->slots_used(), 1);

  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(-3.0f)).ok());
  pool_->EndTurn(s);
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(-3.0f));
  EXPECT_EQ(pool_->slots_used(), 1);
  EXPECT_TRUE(pool_->RollBack(s).ok());  // no turn: nothing to undo
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(-3.0f));
}

// A slot lent to a turn's start is the first one taken back when a slot is needed: the start
// moves to host memory (the idle hot session stays hot) and RollBack still restores it exactly.
// A turn's start in a lent slot whose copy back fails still comes back exactly, through host
// memory; the lent slot is freed either way.
TEST_F(StatePoolTest, ARollBackWhoseSlotCopyFailsGoesThroughHostMemory) {
  Build(/*slots=*/2, Cap(4));
  PooledSession* s = Make("a", T(1));
  s->cold = Cold(0.5f);
  ASSERT_TRUE(pool_->MakeHot(s).ok());
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  ASSERT_EQ(pool_->turns_in_slots(), 1);
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(-3.0f)).ok());  // the turn's work
  failing_->fail_copy = true;
  ASSERT_TRUE(pool_->RollBack(s).ok());
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(0.5f));
  EXPECT_FALSE(s->lost);
  EXPECT_EQ(pool_->slots_used(), 1);
}

// When the start cannot be put back at all, the session holds half a turn: it is marked lost,
// and nothing runs on it, reads it or forks it (DATA_LOSS, SESSION_LOST) until it is deleted.
// Its state never reaches the shared tier either.
TEST_F(StatePoolTest, ASessionWhoseStartCannotBePutBackIsLost) {
  for (const bool in_slot : {true, false}) {
    SCOPED_TRACE(in_slot ? "start in a lent slot" : "start in host memory");
    StatePoolOptions o = Cap(1);
    std::vector<SessionId> spilled;
    o.spill = [&](SessionId id, const std::string&, std::vector<float>, int64_t, int32_t) {
      spilled.push_back(id);
    };
    obs_ = CountingObserver();
    Build(/*slots=*/in_slot ? 2 : 1, o);
    PooledSession* s = Make("a", T(1));
    ASSERT_TRUE(pool_->MakeHot(s).ok());
    ASSERT_TRUE(pool_->BeginTurn(s).ok());
    ASSERT_EQ(pool_->turns_in_slots(), in_slot ? 1 : 0);
    failing_->fail_copy = failing_->fail_write = true;
    const absl::Status rolled = pool_->RollBack(s);
    EXPECT_EQ(rolled.code(), absl::StatusCode::kInternal) << rolled;
    EXPECT_TRUE(s->lost);
    EXPECT_EQ(pool_->turns_in_slots(), 0);
    failing_->fail_copy = failing_->fail_write = false;
    for (const absl::Status& st :
         {pool_->BeginTurn(s), pool_->Fork(s).status(), pool_->Export(s).status()}) {
      EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
      EXPECT_EQ(ReasonOf(st), reason::kSessionLost);
      EXPECT_NE(st.message().find(s->id.ToString()), std::string::npos) << st;
    }
    // Offloaded, then evicted from the full cold tier by newer sessions, it is not spilled.
    const SessionId id = s->id;
    s->busy = false;
    for (int i = 0; i < 4 && Alive(id, "a"); ++i) (void)pool_->MakeHot(Make("a", T(10 + i)));
    EXPECT_FALSE(Alive(id, "a"));
    EXPECT_EQ(obs_.capacity, 1);  // it went for the tier's capacity, where sessions spill
    EXPECT_EQ(std::count(spilled.begin(), spilled.end(), id), 0);
  }
}

TEST_F(StatePoolTest, ALentSlotIsReclaimedBeforeAnIdleSessionIsOffloaded) {
  Build(/*slots=*/3, Cap(4));
  PooledSession* idle = Make("a", T(1));
  ASSERT_TRUE(pool_->MakeHot(idle).ok());
  PooledSession* s = Make("a", T(2));
  s->cold = Cold(0.5f);
  ASSERT_TRUE(pool_->MakeHot(s).ok());
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  s->busy = true;
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(7.0f)).ok());
  EXPECT_EQ(pool_->slots_used(), 3);

  std::optional<int> slot = pool_->AcquireSlot("b");
  ASSERT_TRUE(slot.has_value());
  EXPECT_EQ(pool_->turns_in_slots(), 0);
  EXPECT_GE(idle->slot, 0);  // not offloaded
  EXPECT_EQ(obs_.to_cold_n, 0);
  ASSERT_TRUE(model_->WriteSlot(*slot, Filled(-1.0f)).ok());  // the new owner's work

  ASSERT_TRUE(pool_->RollBack(s).ok());
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(0.5f));
  EXPECT_EQ(pool_->slots_used(), 3);  // nothing double-freed
  s->busy = false;

  // With no slot free, a turn's start goes to host memory straight away.
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  EXPECT_EQ(pool_->turns_in_slots(), 0);
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(2.0f)).ok());
  ASSERT_TRUE(pool_->RollBack(s).ok());
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(0.5f));
}

// With sessions in slots only (a cold tier of 0), a new session takes a slot lent to a turn's
// start rather than being refused.
TEST_F(StatePoolTest, ANewSessionTakesALentSlotWhenTheTierHoldsNone) {
  Build(/*slots=*/2, Cap(0));
  PooledSession* s = pool_->Create("a").value();
  ASSERT_GE(s->slot, 0);
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(0.75f)).ok());
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  s->busy = true;
  EXPECT_EQ(pool_->turns_in_slots(), 1);
  auto fresh = pool_->Create("a");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_GE((*fresh)->slot, 0);
  EXPECT_EQ(pool_->StateOf(**fresh).value(), Filled(0.0f));  // the zero state, not the copy
  EXPECT_EQ(pool_->turns_in_slots(), 0);
  ASSERT_TRUE(model_->WriteSlot(s->slot, Filled(5.0f)).ok());
  ASSERT_TRUE(pool_->RollBack(s).ok());
  EXPECT_EQ(pool_->StateOf(*s).value(), Filled(0.75f));
  s->busy = false;
}

// Deleting a session in the middle of a turn gives its lent slot back.
TEST_F(StatePoolTest, DeletingASessionReleasesItsLentSlot) {
  Build(/*slots=*/2, Cap(4));
  PooledSession* s = Make("a", T(1));
  ASSERT_TRUE(pool_->MakeHot(s).ok());
  ASSERT_TRUE(pool_->BeginTurn(s).ok());
  EXPECT_EQ(pool_->slots_used(), 2);
  pool_->Delete(s);
  EXPECT_EQ(pool_->slots_used(), 0);
  EXPECT_EQ(pool_->turns_in_slots(), 0);
}

}  // namespace
}  // namespace modrwkv

#include "server/shared_sessions.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/base/status_macros.h"
#include "server/logger.h"
#include "server/metrics.h"

namespace modrwkv::server {
namespace {

using Event = Metrics::SharedSessionEvent;

}  // namespace

absl::StatusOr<std::unique_ptr<SharedSessionTier>> SharedSessionTier::Start(const Options& options,
                                                                            Metrics* metrics,
                                                                            Logger* log) {
  absl::string_view a = options.address;
  absl::ConsumePrefix(&a, "redis://");
  const size_t colon = a.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(a.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared-sessions must be redis://HOST:PORT, got '", options.address, "'"));
  }
  if (options.ttl < absl::Seconds(1)) {
    return absl::InvalidArgumentError("shared-session-ttl must be at least 1s");
  }
  return std::unique_ptr<SharedSessionTier>(
      new SharedSessionTier(options, std::string(a.substr(0, colon)), port, metrics, log));
}

SharedSessionTier::SharedSessionTier(Options options, std::string host, int port, Metrics* metrics,
                                     Logger* log)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      metrics_(metrics),
      log_(log),
      thread_([this] { Loop(); }) {}

SharedSessionTier::~SharedSessionTier() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (context_ != nullptr) redisFree(context_);
}

std::string SharedSessionTier::Key(SessionId id, const std::string& owner) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(owner.data(), owner.size(), md, &len, EVP_sha256(), nullptr);
  const std::string digest(reinterpret_cast<const char*>(md), 8);
  return absl::StrCat("modrwkv:session:", id.ToString(), ":", absl::BytesToHexString(digest));
}

void SharedSessionTier::Post(std::function<void()> op) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void SharedSessionTier::Loop() {
  while (true) {
    std::function<void()> op;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and every queued operation ran
      op = std::move(queue_.front());
      queue_.pop_front();
    }
    op();
  }
}

absl::StatusOr<redisContext*> SharedSessionTier::Connection() {
  if (context_ != nullptr) return context_;
  const timeval tv = absl::ToTimeval(options_.timeout);
  redisContext* c = redisConnectWithTimeout(host_.c_str(), port_, tv);
  if (c == nullptr || c->err) {
    const std::string why = c ? c->errstr : "out of memory";
    if (c) redisFree(c);
    return Failed(absl::StrCat("cannot connect to ", host_, ":", port_, ": ", why));
  }
  redisSetTimeout(c, tv);
  context_ = c;
  if (down_) {
    down_ = false;
    if (log_) log_->Info("shared session tier reachable again", {{"address", options_.address}});
  }
  return context_;
}

absl::Status SharedSessionTier::Failed(const std::string& what) {
  if (context_ != nullptr && context_->err) {
    redisFree(context_);
    context_ = nullptr;
  }
  Count(Event::kError);
  if (!down_) {  // logged once per outage; every failure is counted
    down_ = true;
    if (log_)
      log_->Warn("shared session tier unavailable; serving local sessions only", {{"error", what}});
  }
  return absl::UnavailableError(absl::StrCat("shared session tier: ", what));
}

void SharedSessionTier::Count(Metrics::SharedSessionEvent event) const {
  if (metrics_ != nullptr) metrics_->OnSharedSessions(event);
}

void SharedSessionTier::ReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }

absl::StatusOr<SharedSessionTier::Reply> SharedSessionTier::Command(
    std::initializer_list<std::string_view> args) {
  MODRWKV_ASSIGN_OR_RETURN(redisContext * c, Connection());
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  Reply r(static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data())));
  if (!r) return Failed(c->errstr);
  if (r->type == REDIS_REPLY_ERROR) return Failed(std::string(r->str, r->len));
  return r;
}

std::optional<long long> SharedSessionTier::Known(const std::string& key) {
  const absl::Time now = absl::Now();
  // An entry older than the TTL says nothing: the Redis entry has expired since, or another
  // replica has refreshed it (and then its generation is not ours).
  if (now >= next_sweep_) {
    absl::erase_if(known_, [&](const auto& e) { return now - e.second.at > options_.ttl; });
    next_sweep_ = now + options_.ttl / 4;
  }
  auto it = known_.find(key);
  if (it == known_.end()) return std::nullopt;
  if (now - it->second.at > options_.ttl) {
    known_.erase(it);
    return std::nullopt;
  }
  return it->second.value;
}

void SharedSessionTier::Remember(const std::string& key, long long generation) {
  known_[key] = Generation{generation, absl::Now()};
}

namespace {

// KEYS[1] the entry; ARGV: the blob, the generation the caller last saw ("*": any, "": none),
// the TTL in seconds. The new generation, or -1 when the entry's is another.
constexpr std::string_view kPutScript = R"lua(
local g = redis.call('HGET', KEYS[1], 'g')
if ARGV[2] ~= '*' and g and g ~= ARGV[2] then return -1 end
local n = redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('HSET', KEYS[1], 'b', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return n
)lua";

// KEYS[1] the entry: its blob, deleted (nil when there is none).
constexpr std::string_view kTakeScript = R"lua(
local b = redis.call('HGET', KEYS[1], 'b')
redis.call('DEL', KEYS[1])
return b
)lua";

// KEYS[1] the entry; ARGV[1] the TTL in seconds: {blob, new generation}, the entry kept with
// its generation bumped (nil when there is none).
constexpr std::string_view kClaimScript = R"lua(
local b = redis.call('HGET', KEYS[1], 'b')
if not b then return false end
local n = redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {b, n}
)lua";

// KEYS[1] the entry; ARGV[1] the TTL in seconds: a deleted session leaves its generation,
// bumped, without a blob, so that replicas holding an older copy find it stale.
constexpr std::string_view kRemoveScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'b')
redis.call('HINCRBY', KEYS[1], 'g', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
)lua";

}  // namespace

std::string SharedSessionTier::TtlSeconds() const {
  return std::to_string(std::max<int64_t>(1, absl::ToInt64Seconds(options_.ttl)));
}

void SharedSessionTier::Put(SessionId id, const std::string& owner, std::string blob,
                            std::function<void(absl::Status)> done) {
  if (!done) done = [](absl::Status) {};
  Post([this, id, key = Key(id, owner), blob = std::move(blob), done = std::move(done)] {
    std::string seen = "*";
    if (options_.write_through) {
      const std::optional<long long> known = Known(key);
      seen = known ? std::to_string(*known) : "";
    }
    absl::StatusOr<Reply> r = Command({"EVAL", kPutScript, "1", key, blob, seen, TtlSeconds()});
    if (!r.ok()) return done(r.status());
    if ((*r)->type != REDIS_REPLY_INTEGER) return done(Failed("unexpected reply to a store"));
    if ((*r)->integer < 0) {
      known_.erase(key);
      Count(Event::kConflict);
      return done(absl::AbortedError(absl::StrCat(
          "session ", id.ToString(),
          " was resumed by another replica meanwhile: its state there does not include this "
          "call's change; continue on the replica that holds it")));
    }
    if (options_.write_through) Remember(key, (*r)->integer);
    Count(Event::kStored);
    done(absl::OkStatus());
  });
}

void SharedSessionTier::Take(SessionId id, const std::string& owner,
                             std::function<void(absl::StatusOr<std::optional<std::string>>)> done) {
  Post([this, key = Key(id, owner), done = std::move(done)] {
    if (!options_.write_through) {
      absl::StatusOr<Reply> r = Command({"EVAL", kTakeScript, "1", key});
      if (!r.ok()) return done(r.status());
      if ((*r)->type == REDIS_REPLY_NIL) return done(std::optional<std::string>());
      if ((*r)->type != REDIS_REPLY_STRING) return done(Failed("unexpected reply to a take"));
      return done(std::optional<std::string>(std::string((*r)->str, (*r)->len)));
    }
    absl::StatusOr<Reply> r = Command({"EVAL", kClaimScript, "1", key, TtlSeconds()});
    if (!r.ok()) return done(r.status());
    if ((*r)->type == REDIS_REPLY_NIL) return done(std::optional<std::string>());
    if ((*r)->type != REDIS_REPLY_ARRAY || (*r)->elements != 2 ||
        (*r)->element[0]->type != REDIS_REPLY_STRING ||
        (*r)->element[1]->type != REDIS_REPLY_INTEGER) {
      return done(Failed("unexpected reply to a claim"));
    }
    Remember(key, (*r)->element[1]->integer);
    done(std::optional<std::string>(std::string((*r)->element[0]->str, (*r)->element[0]->len)));
  });
}

void SharedSessionTier::Check(SessionId id, const std::string& owner,
                              std::function<void(absl::StatusOr<bool>)> done) {
  Post([this, key = Key(id, owner), done = std::move(done)] {
    absl::StatusOr<Reply> r = Command({"HGET", key, "g"});
    if (!r.ok()) return done(r.status());
    if ((*r)->type == REDIS_REPLY_NIL) return done(true);  // expired, evicted or never stored
    long long generation = 0;
    if ((*r)->type != REDIS_REPLY_STRING ||
        !absl::SimpleAtoi(absl::string_view((*r)->str, (*r)->len), &generation)) {
      return done(Failed("unexpected reply to a generation read"));
    }
    if (Known(key) == generation) return done(true);
    known_.erase(key);
    Count(Event::kStale);
    done(false);
  });
}

void SharedSessionTier::Remove(SessionId id, const std::string& owner,
                               std::function<void(absl::Status)> done) {
  if (!done) done = [](absl::Status) {};
  Post([this, key = Key(id, owner), done = std::move(done)] {
    known_.erase(key);
    absl::StatusOr<Reply> r = options_.write_through
                                  ? Command({"EVAL", kRemoveScript, "1", key, TtlSeconds()})
                                  : Command({"DEL", key});
    done(r.ok() ? absl::OkStatus() : r.status());
  });
}

}  // namespace modrwkv::server

#include "server/shared_sessions.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include <fstream>
#include <iterator>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

absl::Status SharedSessionTier::ReadPasswordFile(const std::string& path, Options* options) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared-sessions-password-file: cannot read ", path));
  }
  std::vector<std::string> words =
      absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  if (words.empty() || words.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared-sessions-password-file: ", path,
        " must hold one line, PASSWORD or USERNAME PASSWORD (it has ", words.size(), " words)"));
  }
  options->username = words.size() == 2 ? words[0] : "";
  options->password = words.back();
  return absl::OkStatus();
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
  if (!options_.password.empty()) {
    Reply r(static_cast<redisReply*>(
        options_.username.empty()
            ? redisCommand(c, "AUTH %b", options_.password.data(), options_.password.size())
            : redisCommand(c, "AUTH %b %b", options_.username.data(), options_.username.size(),
                           options_.password.data(), options_.password.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      const std::string why = !r ? std::string(c->errstr) : std::string(r->str, r->len);
      redisFree(c);
      return Failed(absl::StrCat("AUTH refused by ", host_, ":", port_, ": ", why));
    }
  }
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

absl::StatusOr<std::vector<SharedSessionTier::Reply>> SharedSessionTier::Pipeline(
    std::initializer_list<std::initializer_list<std::string_view>> commands, Resend resend) {
  for (int attempt = 0;; ++attempt) {
    const bool reused = context_ != nullptr;
    MODRWKV_ASSIGN_OR_RETURN(redisContext * c, Connection());
    bool sent = true;
    for (const auto& args : commands) {
      std::vector<const char*> argv;
      std::vector<size_t> lengths;
      for (std::string_view a : args) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
      }
      if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()) !=
          REDIS_OK) {
        sent = false;
        break;
      }
    }
    std::vector<Reply> replies;
    for (size_t i = 0; sent && i < commands.size(); ++i) {
      void* r = nullptr;
      if (redisGetReply(c, &r) != REDIS_OK) {
        sent = false;
        break;
      }
      replies.emplace_back(static_cast<redisReply*>(r));
    }
    if (!sent) {
      // A connection that Redis closed while it sat idle (a restart, a timeout): once more on a
      // new one, for the commands that may run twice.
      if (resend == Resend::kYes && reused && attempt == 0 &&
          (c->err == REDIS_ERR_EOF || c->err == REDIS_ERR_IO)) {
        redisFree(context_);
        context_ = nullptr;
        continue;
      }
      return Failed(c->errstr);
    }
    // Every reply is read first, so that the connection stays in step after an error reply.
    for (const Reply& r : replies) {
      if (r->type == REDIS_REPLY_ERROR) return Failed(std::string(r->str, r->len));
    }
    return replies;
  }
}

absl::StatusOr<SharedSessionTier::Reply> SharedSessionTier::Command(
    std::initializer_list<std::string_view> args, Resend resend) {
  MODRWKV_ASSIGN_OR_RETURN(std::vector<Reply> r, Pipeline({args}, resend));
  return std::move(r[0]);
}

const SharedSessionTier::KnownGeneration* SharedSessionTier::Known(const std::string& key) {
  const absl::Time now = absl::Now();
  // An entry older than the TTL says nothing: the Redis entry has expired since, or another
  // replica has refreshed it (and then its generation is not ours).
  if (now >= next_sweep_) {
    absl::erase_if(known_, [&](const auto& e) { return now - e.second.at > options_.ttl; });
    next_sweep_ = now + options_.ttl / 4;
  }
  auto it = known_.find(key);
  if (it == known_.end()) return nullptr;
  if (now - it->second.at > options_.ttl) {
    known_.erase(it);
    return nullptr;
  }
  return &it->second;
}

bool SharedSessionTier::KnownIs(const std::string& key, long long generation) {
  const KnownGeneration* k = Known(key);
  return k != nullptr && k->value == generation;
}

void SharedSessionTier::Remember(const std::string& key, long long generation) {
  known_[key] = KnownGeneration{generation, absl::Now(), /*dirty=*/false};
}

absl::Status SharedSessionTier::MarkDirty(const std::string& key, absl::Status failure) {
  if (auto it = known_.find(key); it != known_.end()) it->second.dirty = true;
  return failure;
}

namespace {

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

// The blobs never pass through Lua (which copies a 13 MB state twice more): the conditional
// store and the claim are optimistic transactions (WATCH, read, MULTI ... EXEC; EXEC fails when
// another client changed the entry in between, and the attempt is made once more).
void SharedSessionTier::Put(SessionId id, const std::string& owner, std::string blob,
                            std::function<void(absl::Status)> done) {
  if (!done) done = [](absl::Status) {};
  Post([this, id, key = Key(id, owner), blob = std::move(blob), done = std::move(done)] {
    Store(id, key, blob, done);
  });
}

void SharedSessionTier::HandOff(SessionId id, const std::string& owner, std::string blob,
                                std::function<void(absl::Status)> done) {
  if (!done) done = [](absl::Status) {};
  Post([this, id, key = Key(id, owner), blob = std::move(blob), done = std::move(done)] {
    if (options_.write_through) {
      // Its latest state is there already unless this replica's last store of it failed (or it
      // never stored it: an outage since the session began).
      if (const KnownGeneration* k = Known(key); k != nullptr && !k->dirty) {
        return done(absl::OkStatus());
      }
    }
    Store(id, key, blob, done);
  });
}

void SharedSessionTier::Store(SessionId id, const std::string& key, const std::string& blob,
                              const std::function<void(absl::Status)>& done) {
  const std::string ttl = TtlSeconds();
  if (!options_.write_through) {  // a hand-off: replaces whatever was there
    absl::StatusOr<std::vector<Reply>> r = Pipeline({{"MULTI"},
                                                     {"DEL", key},
                                                     {"HSET", key, "b", blob, "g", "1"},
                                                     {"EXPIRE", key, ttl},
                                                     {"EXEC"}},
                                                    Resend::kYes);
    if (!r.ok()) return done(r.status());
    if ((*r)[4]->type != REDIS_REPLY_ARRAY) return done(Failed("a hand-off was not stored"));
    Count(Event::kStored);
    return done(absl::OkStatus());
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<std::vector<Reply>> seen =
        Pipeline({{"WATCH", key}, {"HGET", key, "g"}}, Resend::kYes);
    if (!seen.ok()) return done(MarkDirty(key, seen.status()));
    absl::StatusOr<std::optional<long long>> g = Generation(*(*seen)[1]);
    if (!g.ok()) return done(g.status());
    if (g->has_value() && !KnownIs(key, **g)) break;  // another replica's state is there
    const long long next = g->value_or(0) + 1;
    absl::StatusOr<std::vector<Reply>> r =
        Pipeline({{"MULTI"},
                  {"HSET", key, "b", blob, "g", std::to_string(next)},
                  {"EXPIRE", key, ttl},
                  {"EXEC"}});
    if (!r.ok()) return done(MarkDirty(key, r.status()));
    if ((*r)[3]->type == REDIS_REPLY_ARRAY) {
      Remember(key, next);
      Count(Event::kStored);
      return done(absl::OkStatus());
    }
    // EXEC refused: the entry changed after WATCH (a claim, a store, its expiry); look again.
  }
  if (absl::StatusOr<Reply> r = Command({"UNWATCH"}); !r.ok()) return done(r.status());
  known_.erase(key);
  Count(Event::kConflict);
  done(absl::AbortedError(absl::StrCat(
      "session ", id.ToString(),
      " was resumed by another replica meanwhile: its state there does not include this "
      "call's change; continue on the replica that holds it")));
}

void SharedSessionTier::Take(SessionId id, const std::string& owner,
                             std::function<void(absl::StatusOr<std::optional<std::string>>)> done) {
  Post([this, key = Key(id, owner), done = std::move(done)] {
    if (!options_.write_through) {  // moved out: read and deleted at once
      absl::StatusOr<std::vector<Reply>> r =
          Pipeline({{"MULTI"}, {"HGET", key, "b"}, {"DEL", key}, {"EXEC"}}, Resend::kYes);
      if (!r.ok()) return done(r.status());
      const redisReply* exec = (*r)[3].get();
      if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2) {
        return done(Failed("unexpected reply to a take"));
      }
      const redisReply* b = exec->element[0];
      if (b->type == REDIS_REPLY_NIL) return done(std::optional<std::string>());
      if (b->type != REDIS_REPLY_STRING) return done(Failed("unexpected reply to a take"));
      return done(std::optional<std::string>(std::string(b->str, b->len)));
    }
    // Claimed: the entry stays, its generation bumped and remembered as this replica's.
    for (int attempt = 0; attempt < 2; ++attempt) {
      absl::StatusOr<std::vector<Reply>> seen =
          Pipeline({{"WATCH", key}, {"HMGET", key, "b", "g"}}, Resend::kYes);
      if (!seen.ok()) return done(seen.status());
      const redisReply* fields = (*seen)[1].get();
      if (fields->type != REDIS_REPLY_ARRAY || fields->elements != 2) {
        return done(Failed("unexpected reply to a claim"));
      }
      const redisReply* b = fields->element[0];
      if (b->type != REDIS_REPLY_STRING) {  // none, or deleted (a generation without a blob)
        if (absl::StatusOr<Reply> r = Command({"UNWATCH"}); !r.ok()) return done(r.status());
        return done(std::optional<std::string>());
      }
      absl::StatusOr<std::optional<long long>> g = Generation(*fields->element[1]);
      if (!g.ok()) return done(g.status());
      const long long next = g->value_or(0) + 1;
      absl::StatusOr<std::vector<Reply>> r = Pipeline({{"MULTI"},
                                                       {"HSET", key, "g", std::to_string(next)},
                                                       {"EXPIRE", key, TtlSeconds()},
                                                       {"EXEC"}});
      if (!r.ok()) return done(r.status());
      if ((*r)[3]->type == REDIS_REPLY_ARRAY) {
        Remember(key, next);
        return done(std::optional<std::string>(std::string(b->str, b->len)));
      }
    }
    if (absl::StatusOr<Reply> r = Command({"UNWATCH"}); !r.ok()) return done(r.status());
    done(absl::AbortedError("the session changed twice while it was being resumed; try again"));
  });
}

absl::StatusOr<std::optional<long long>> SharedSessionTier::Generation(const redisReply& r) {
  if (r.type == REDIS_REPLY_NIL) return std::optional<long long>();
  long long g = 0;
  if (r.type != REDIS_REPLY_STRING || !absl::SimpleAtoi(absl::string_view(r.str, r.len), &g)) {
    return Failed("an entry's generation is not a number");
  }
  return std::optional<long long>(g);
}

void SharedSessionTier::Check(SessionId id, const std::string& owner,
                              std::function<void(absl::StatusOr<bool>)> done) {
  Post([this, key = Key(id, owner), done = std::move(done)] {
    absl::StatusOr<Reply> r = Command({"HGET", key, "g"}, Resend::kYes);
    if (!r.ok()) return done(r.status());
    absl::StatusOr<std::optional<long long>> g = Generation(**r);
    if (!g.ok()) return done(g.status());
    // No entry: expired (then so has every copy: the TTLs are checked at start-up) or never
    // stored (an outage): the local copy serves.
    if (!g->has_value() || KnownIs(key, **g)) return done(true);
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
    absl::StatusOr<Reply> r =
        Command({"EVAL", kRemoveScript, "1", key, TtlSeconds()}, Resend::kYes);
    done(r.ok() ? absl::OkStatus() : r.status());
  });
}

}  // namespace modrwkv::server

#include "server/shared_sessions.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/logger.h"
#include "server/metrics.h"

namespace modrwkv::server {
namespace {

using Event = Metrics::SharedSessionEvent;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

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
    log_->Info("shared session tier reachable again", {{"address", options_.address}});
  }
  return context_;
}

absl::Status SharedSessionTier::Failed(const std::string& what) {
  if (context_ != nullptr && context_->err) {
    redisFree(context_);
    context_ = nullptr;
  }
  metrics_->OnSharedSessions(Event::kError);
  if (!down_) {  // logged once per outage; every failure is counted
    down_ = true;
    log_->Warn("shared session tier unavailable; serving local sessions only", {{"error", what}});
  }
  return absl::UnavailableError(absl::StrCat("shared session tier: ", what));
}

void SharedSessionTier::Put(SessionId id, const std::string& owner, std::string blob,
                            std::function<void(absl::Status)> done) {
  if (!done) done = [](absl::Status) {};
  Post([this, key = Key(id, owner), blob = std::move(blob), done = std::move(done)] {
    absl::StatusOr<redisContext*> c = Connection();
    if (!c.ok()) return done(c.status());
    const long long ttl = std::max<long long>(1, absl::ToInt64Seconds(options_.ttl));
    Reply r(static_cast<redisReply*>(redisCommand(*c, "SET %b %b EX %lld", key.data(), key.size(),
                                                  blob.data(), blob.size(), ttl)));
    if (!r) return done(Failed((*c)->errstr));
    if (r->type == REDIS_REPLY_ERROR) return done(Failed(std::string(r->str, r->len)));
    metrics_->OnSharedSessions(Event::kStored);
    done(absl::OkStatus());
  });
}

void SharedSessionTier::Take(SessionId id, const std::string& owner,
                             std::function<void(absl::StatusOr<std::optional<std::string>>)> done) {
  Post([this, key = Key(id, owner), done = std::move(done)] {
    absl::StatusOr<redisContext*> c = Connection();
    if (!c.ok()) return done(c.status());
    Reply r(static_cast<redisReply*>(redisCommand(*c, "GETDEL %b", key.data(), key.size())));
    if (!r) return done(Failed((*c)->errstr));
    if (r->type == REDIS_REPLY_NIL) return done(std::optional<std::string>());
    if (r->type != REDIS_REPLY_STRING) {
      return done(Failed(r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len)
                                                      : "unexpected reply to GETDEL"));
    }
    done(std::optional<std::string>(std::string(r->str, r->len)));
  });
}

}  // namespace modrwkv::server

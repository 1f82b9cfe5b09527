// The outgoing side of one server stream, shared by the Generate and Chat reactors: complete
// messages in order, the open chunk that engine tokens coalesce into while a write is in flight,
// the bounded backlog that cuts a slow reader off, one write in flight, Finish exactly once.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "engine/serving/scheduler.h"
#include "grpcpp/support/status.h"
#include "modrwkv/v1/inference.pb.h"

namespace modrwkv::server {

// The output of running generations (one per choice) that no write has taken yet, one open chunk
// per choice, bounded in bytes over all of them (counted as AppendTokenEvent counts them). Not
// thread-safe.
class TokenBacklog {
 public:
  explicit TokenBacklog(size_t limit_bytes) : limit_(limit_bytes) {}

  // Coalesces one event into its choice's chunk. Past the limit every chunk is dropped, the
  // backlog turns overflowed (and ignores events from then on) and Append returns true, once.
  bool Append(const TokenEvent& event, int choice = 0);
  bool empty() const;
  bool overflowed() const { return overflowed_; }
  size_t bytes() const { return bytes_; }
  // Moves one choice's chunk into `out` (which must be empty; its `choice` set) and starts a new
  // one for it. Choices take turns, so a fast one cannot starve the others.
  void TakeInto(::modrwkv::v1::TokenChunk* out);
  // Moves `choice`'s chunk (if any) into `out`; false when it has none.
  bool TakeChoiceInto(int choice, ::modrwkv::v1::TokenChunk* out);
  void Clear();

 private:
  size_t limit_;
  std::vector<::modrwkv::v1::TokenChunk> chunks_;  // by choice
  std::vector<size_t> chunk_bytes_;
  int next_ = 0;  // the choice TakeInto looks at first
  size_t bytes_ = 0;
  bool overflowed_ = false;
};

// Response: GenerateResponse or ChatResponse (any message with a `chunk` TokenChunk field).
//
// Not thread-safe: the owning reactor calls every method under its own mutex, asks Next() what
// to do and issues the step (StartWrite(message()) or Finish(status)) after releasing the mutex.
// Because the decision and every state change that can enable it happen under that one mutex,
// exactly one write is in flight and Finish is decided exactly once. A thread that is not inside
// a gRPC reaction and issues kFinish must not touch the reactor afterwards (OnDone may delete it).
template <typename Response>
class StreamOutbox {
 public:
  struct Step {
    enum Kind { kNone, kWrite, kFinish } kind = kNone;
    grpc::Status status;  // for kFinish
  };

  explicit StreamOutbox(size_t backlog_limit_bytes) : backlog_(backlog_limit_bytes) {}

  // Tokens of a running generation (`choice` of GenerateRequest.n). True when this event
  // overflowed the backlog: the output is dropped and the caller cancels the engine requests.
  // Ignored once the client is gone.
  bool AppendTokens(const TokenEvent& event, int choice = 0) {
    if (client_gone_) return false;
    return backlog_.Append(event, choice);
  }
  bool overflowed() const { return backlog_.overflowed(); }

  // Queues a complete message after the open chunks (which are closed into the queue first).
  void Push(Response message) {
    if (client_gone_) return;
    CloseChunk();
    queue_.push_back(std::move(message));
  }
  // Queues a message that ends `choice` after that choice's open chunk; the other choices' chunks
  // stay open.
  void PushAfterChoice(int choice, Response message) {
    if (client_gone_) return;
    Response m;
    if (backlog_.TakeChoiceInto(choice, m.mutable_chunk())) queue_.push_back(std::move(m));
    queue_.push_back(std::move(message));
  }
  void CloseChunk() {
    while (!client_gone_ && !backlog_.empty()) {
      Response m;
      backlog_.TakeInto(m.mutable_chunk());
      queue_.push_back(std::move(m));
    }
  }

  // The stream ends with `status` once queued output is written and the owner allows it; the
  // first status given wins.
  void End(grpc::Status status) {
    if (!end_) end_ = std::move(status);
  }
  bool ending() const { return end_.has_value(); }

  // The client is gone (cancelled, or a write failed): unsent output is dropped and the stream
  // ends CANCELLED. True the first time (the caller then cancels its engine work).
  bool ClientGone() {
    if (client_gone_) return false;
    client_gone_ = true;
    queue_.clear();
    backlog_.Clear();
    End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    return true;
  }
  bool client_gone() const { return client_gone_; }

  // The write in flight completed. True when it failed and the client is newly gone.
  bool WriteDone(bool ok) {
    writing_ = false;
    return ok ? false : ClientGone();
  }

  // The next step: the next queued message, else the open chunk, else Finish once the stream
  // ends and `may_finish` (the owner has no read or engine work outstanding).
  Step Next(bool may_finish) {
    Step step;
    if (writing_ || finished_) return step;
    if (!client_gone_ && !queue_.empty()) {
      out_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      step.kind = Step::kWrite;
    } else if (!client_gone_ && !backlog_.empty()) {
      out_.Clear();
      backlog_.TakeInto(out_.mutable_chunk());
      writing_ = true;
      step.kind = Step::kWrite;
    } else if (end_ && may_finish) {
      finished_ = true;
      step.kind = Step::kFinish;
      step.status = *end_;
    }
    return step;
  }

  // The message of the write in flight (stable until WriteDone).
  const Response* message() const { return &out_; }

  // Issues `step` on the reactor: StartWrite(message()), or on_finish(status) then Finish. Call
  // without the reactor's mutex; after a kFinish the reactor may already be gone.
  template <typename Reactor, typename OnFinish>
  void Issue(Reactor* reactor, Step step, OnFinish on_finish) {
    if (step.kind == Step::kWrite) {
      reactor->StartWrite(message());
    } else if (step.kind == Step::kFinish) {
      on_finish(step.status);
      reactor->Finish(std::move(step.status));
    }
  }

 private:
  TokenBacklog backlog_;
  std::deque<Response> queue_;
  std::optional<grpc::Status> end_;
  bool writing_ = false, finished_ = false, client_gone_ = false;
  Response out_;
};

}  // namespace modrwkv::server

#include "server/forecast_reactor.h"

#include "encoders/timeseries/rollout.h"
#include "engine/base/status_macros.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

template <typename Stage>
void ForecastReactor::RunStage(Stage stage) {
  std::optional<grpc::Status> reply;
  {
    std::lock_guard<std::mutex> l(mu_);
    reply = stage();
  }
  if (reply) Finish(*reply);
}

ForecastReactor::ForecastReactor(ServingContext* ctx, grpc::CallbackServerContext* call,
                                 const pb::ForecastRequest* request, pb::ForecastResponse* response)
    : ctx_(ctx),
      call_(call),
      response_(response),
      sink_(std::make_shared<ReactorSink<ForecastReactor>>(this)) {
  ctx_->generate_streams.fetch_add(1);
  started_ = absl::Now();
  record_.method = "Forecast";
  record_.peer = call_->peer();
  record_.request_id = ctx_->RequestId(*call_, request->request_id());
  record_.generation = true;
  call_->AddInitialMetadata("x-request-id", record_.request_id);
  RunStage([&]() -> std::optional<grpc::Status> {
    const absl::Status st = Start(*request);
    return st.ok() ? std::nullopt : Complete(st);
  });
}

absl::Status ForecastReactor::Start(const pb::ForecastRequest& request) {
  MODRWKV_ASSIGN_OR_RETURN(record_.owner, ctx_->Admit(*call_));
  MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request.ByteSizeLong(), "series"));
  MODRWKV_ASSIGN_OR_RETURN(ForecastPlan plan,
                           ToForecastPlan(request, ctx_->translation, call_->deadline()));
  MODRWKV_ASSIGN_OR_RETURN(in_flight_, ctx_->AdmitRequest(record_.owner, plan.priority));
  series_model_ = ctx_->series;
  if (series_model_ == nullptr || ctx_->media_pool == nullptr) {
    return absl::InternalError("the time-series encoder is not loaded");
  }
  horizon_ = plan.horizon;
  deadline_ = plan.deadline;
  priority_ = plan.priority;
  rollout_.emplace(std::move(plan.series), horizon_, series_model_->horizon(),
                   ctx_->translation.series->max_length,
                   static_cast<int>(series_model_->quantile_levels().size()));
  return StartRound();
}

absl::Status ForecastReactor::StartRound() {
  if (absl::Now() >= deadline_) {
    return absl::DeadlineExceededError("the forecast's deadline passed");
  }
  norm_ = series_model_->Stats(rollout_->window());
  PendingMedia item;
  item.part = 0;
  item.kind = encoders::kSeriesKind;
  item.bytes = std::make_shared<const std::string>(encoders::PackSeries(rollout_->window()));
  item.field = "series";
  // The pool may call back before EncodeMedia returns (a cache hit), on its own thread: that
  // callback takes mu_ after this round's state is complete, as mu_ is held here.
  MODRWKV_ASSIGN_OR_RETURN(
      media_job_,
      EncodeMedia(ctx_, {item}, priority_, record_.owner, [sink = sink_](EncodedMedia rows) {
        sink->Run([&](ForecastReactor* r) { r->OnEncoded(std::move(rows)); });
      }));
  return absl::OkStatus();
}

void ForecastReactor::OnEncoded(EncodedMedia rows) {
  RunStage([&] { return Encoded(std::move(rows)); });
}

std::optional<grpc::Status> ForecastReactor::Encoded(EncodedMedia rows) {
  media_job_ = 0;
  if (finished_) return std::nullopt;
  absl::Status st = rows.status();
  if (st.ok() && cancelled_) st = absl::CancelledError("the client cancelled the forecast");
  if (st.ok() && (rows->size() != 1 || (*rows)[0]->dim != ctx_->model->config().n_embd)) {
    st = absl::InternalError("the time-series encoder returned rows of the wrong shape");
  }
  if (!st.ok()) return Complete(st);
  const encoders::EmbeddingRows& r = *(*rows)[0];
  EngineRequest req;
  req.output = RequestOutput::kHiddenState;
  req.prompt.push_back(InputRows{{}, r.data});
  const std::vector<int32_t>& prompt = ctx_->translation.series->forecast_prompt;
  if (!prompt.empty()) req.prompt.push_back(InputRows{prompt, {}});
  req.owner = record_.owner;
  req.request_id = record_.request_id;
  req.deadline = deadline_;
  req.priority = priority_;
  record_.series_rows += r.rows;
  ctx_->metrics->encoder_observer()->OnRequestRows(0, 0, r.rows);
  // The scheduler calls the sink back on its own thread, never inside Submit.
  absl::StatusOr<RequestId> id = ctx_->scheduler->Submit(std::move(req), sink_);
  if (!id.ok()) return Complete(id.status());
  engine_id_ = *id;
  return std::nullopt;
}

void ForecastReactor::OnEngineFinish(FinishEvent event) {
  RunStage([&] { return RoundDone(std::move(event)); });
}

std::optional<grpc::Status> ForecastReactor::RoundDone(FinishEvent event) {
  engine_id_ = 0;
  if (finished_) return std::nullopt;
  record_.prompt_tokens += event.prompt_tokens;
  record_.queue_time += event.queue_time;
  absl::Status st;
  switch (event.reason) {
    case EndReason::kLength:
      break;
    case EndReason::kDeadline:
      st = absl::DeadlineExceededError("the forecast's deadline passed");
      break;
    case EndReason::kCancelled:
      st = absl::CancelledError("the client cancelled the forecast");
      break;
    default:
      st = event.status.ok() ? absl::InternalError("the model run ended without a hidden state")
                             : event.status;
  }
  if (st.ok() && static_cast<int>(event.hidden_state.size()) != ctx_->model->config().n_embd) {
    st = absl::InternalError("the model run returned no hidden state");
  }
  if (!st.ok()) return Complete(st);
  absl::StatusOr<encoders::HeadForecast> y = series_model_->Forecast(event.hidden_state, norm_);
  if (!y.ok()) return Complete(y.status());
  if (rollout_->Add(y->point, y->quantiles)) return Complete(absl::OkStatus());
  st = StartRound();
  if (!st.ok()) return Complete(st);
  return std::nullopt;
}

void ForecastReactor::OnCancel() {
  encoders::JobId job;
  RequestId id;
  {
    std::lock_guard<std::mutex> l(mu_);
    cancelled_ = true;
    job = media_job_;
    id = engine_id_;
  }
  if (job != 0) ctx_->media_pool->Cancel(job);
  if (id != 0) ctx_->scheduler->Cancel(id);
}

std::optional<grpc::Status> ForecastReactor::Complete(const absl::Status& status) {
  if (finished_) return std::nullopt;
  finished_ = true;
  in_flight_.reset();
  if (status.ok()) {
    const std::vector<float>& values = rollout_->values();
    response_->mutable_values()->Assign(values.begin(), values.end());
    const std::vector<float>& levels = series_model_->quantile_levels();
    for (size_t k = 0; k < levels.size(); ++k) {
      pb::QuantileForecast* q = response_->add_quantiles();
      q->set_level(levels[k]);
      const std::vector<float>& level = rollout_->quantiles()[k];
      q->mutable_values()->Assign(level.begin(), level.end());
    }
    response_->set_horizon(horizon_);
    response_->set_channels(rollout_->window().channels);
    response_->set_rounds(rollout_->rounds());
    response_->set_request_id(record_.request_id);
    pb::Usage* u = response_->mutable_usage();
    u->set_prompt_tokens(static_cast<int32_t>(record_.prompt_tokens));
    u->set_series_rows(record_.series_rows);
    FillDuration(record_.queue_time, u->mutable_queue_time());
    FillDuration(absl::Now() - started_, u->mutable_total_time());
  }
  record_.forecast_rounds = rollout_ ? rollout_->rounds() : 0;
  record_.finish_reason = status.ok() ? "length" : "error";
  record_.total_time = absl::Now() - started_;
  const grpc::Status st = ToGrpcStatus(status);
  ctx_->RecordFinish(&record_, st);
  return st;
}

void ForecastReactor::OnDone() {
  sink_->Detach();
  ServingContext* ctx = ctx_;
  delete this;
  ctx->generate_streams.fetch_sub(1);  // last: the server may be torn down after this
}

}  // namespace modrwkv::server

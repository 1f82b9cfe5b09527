#include "server/inference_service.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/text/utf8.h"
#include "server/chat_reactor.h"
#include "server/forecast_reactor.h"
#include "server/generate_reactor.h"
#include "server/status_mapping.h"

namespace modrwkv::server {

grpc::ServerWriteReactor<pb::GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* call, const pb::GenerateRequest* request) {
  return new GenerateReactor(ctx_, call, request);
}

grpc::ServerBidiReactor<pb::ChatRequest, pb::ChatResponse>* InferenceService::Chat(
    grpc::CallbackServerContext* call) {
  return new ChatReactor(ctx_, call);
}

grpc::ServerUnaryReactor* InferenceService::Forecast(grpc::CallbackServerContext* call,
                                                     const pb::ForecastRequest* request,
                                                     pb::ForecastResponse* response) {
  return new ForecastReactor(ctx_, call, request, response);
}

grpc::ServerUnaryReactor* InferenceService::FinishUnary(grpc::CallbackServerContext* call,
                                                        absl::string_view method,
                                                        const std::string& owner,
                                                        const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  ctx_->FinishUnary(call, reactor, method, owner, status);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* call,
                                                     const pb::TokenizeRequest* request,
                                                     pb::TokenizeResponse* response) {
  std::string owner;
  absl::Status st = [&]() -> absl::Status {
    MODRWKV_ASSIGN_OR_RETURN(owner, ctx_->Admit(*call));
    MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request->ByteSizeLong(), "text"));
    std::vector<int32_t> ids = ctx_->tokenizer->Encode(request->text());
    response->mutable_token_ids()->Assign(ids.begin(), ids.end());
    return absl::OkStatus();
  }();
  return FinishUnary(call, "Tokenize", owner, st);
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* call,
                                                       const pb::DetokenizeRequest* request,
                                                       pb::DetokenizeResponse* response) {
  std::string owner;
  absl::Status st = [&]() -> absl::Status {
    MODRWKV_ASSIGN_OR_RETURN(owner, ctx_->Admit(*call));
    MODRWKV_RETURN_IF_ERROR(ctx_->CheckSize(request->ByteSizeLong(), "token_ids"));
    const auto& ids = request->token_ids();
    std::string raw;
    for (int i = 0; i < ids.size(); ++i) {
      // Ids without bytes (0 = end of text, ids past the World vocab) add nothing, as in a stream.
      if (ids[i] < 0 || ids[i] >= ctx_->translation.model_vocab) {
        return InvalidField(absl::StrFormat("token_ids[%d]", i),
                            absl::StrFormat("token_ids[%d] = %d is outside the vocabulary [0, %d)",
                                            i, ids[i], ctx_->translation.model_vocab));
      }
      raw.append(ctx_->tokenizer->TokenBytes(ids[i]));
    }
    response->set_text(ReplaceInvalidUtf8(raw));
    response->set_raw(std::move(raw));
    return absl::OkStatus();
  }();
  return FinishUnary(call, "Detokenize", owner, st);
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* call,
                                                         const pb::GetModelInfoRequest* request,
                                                         pb::ModelInfo* response) {
  std::string owner;
  absl::Status st = [&]() -> absl::Status {
    MODRWKV_ASSIGN_OR_RETURN(owner, ctx_->Admit(*call));
    const ServerOptions& o = *ctx_->options;
    const ModelDescription& info = ctx_->model->info();
    const ModelConfig& c = info.config;
    // The file name only: clients need not learn the server's directory layout.
    response->set_model_path(std::filesystem::path(o.model_path).filename().string());
    response->set_architecture("rwkv7");
    pb::ModelShape* shape = response->mutable_shape();
    shape->set_n_layer(c.n_layer);
    shape->set_n_embd(c.n_embd);
    shape->set_n_head(c.n_head);
    shape->set_head_size(c.head_size);
    shape->set_vocab_size(c.vocab_size);
    shape->set_ffn_size(c.ffn_size);
    response->set_backend(info.backend);
    response->set_weight_dtype(info.weight_dtype);
    response->set_parameter_count(info.parameter_count);
    response->set_state_bytes(c.StateBytes());
    response->set_fingerprint(FingerprintHex(info.fingerprint));
    response->add_modalities(pb::MODALITY_TEXT);
    if (ctx_->translation.image) response->add_modalities(pb::MODALITY_IMAGE);
    if (ctx_->translation.audio) response->add_modalities(pb::MODALITY_AUDIO);
    if (ctx_->translation.series) response->add_modalities(pb::MODALITY_TIME_SERIES);
    response->set_tokenizer_vocab_size(ctx_->tokenizer->vocab_size());
    response->set_chat_template(ctx_->translation.chat_template);
    response->set_session_routing_hint(absl::StrFormat("%08x", ctx_->session_routing_hint));
    if (const InitialStates* states = ctx_->translation.initial_states) {
      for (const std::string& name : states->names()) response->add_initial_states(name);
      response->set_default_initial_state(states->default_name());
    }
    pb::Limits* l = response->mutable_limits();
    l->set_max_running(o.scheduler.max_running);
    l->set_state_slots(ctx_->model->num_slots());
    l->set_max_step_tokens(o.scheduler.max_step_tokens);
    l->set_max_queued_requests(o.scheduler.max_queued_requests);
    l->set_max_queued_prompt_tokens(o.scheduler.max_queued_prompt_tokens);
    l->set_max_message_bytes(o.max_message_bytes);
    l->set_max_stop_strings(StopConditions::kMaxStopStrings);
    l->set_max_stop_string_bytes(StopConditions::kMaxStopStringBytes);
    l->set_max_logprobs_top_n(SamplerConfig::kMaxTopLogprobs);
    l->set_stream_buffer_bytes(o.stream_buffer_bytes);
    l->set_max_cold_sessions(o.scheduler.max_cold_sessions);
    l->set_max_choices(o.max_choices);
    const CallerLimits caller = ctx_->LimitsOf(owner);
    l->set_max_request_priority(caller.max_priority.value_or(o.max_request_priority));
    l->set_max_requests_in_flight(caller.max_requests.value_or(o.max_requests_per_owner));
    FillDuration(o.scheduler.session_ttl, l->mutable_session_ttl());
    if (ctx_->translation.image) {
      l->set_max_images_per_request(o.max_images_per_request);
      l->set_max_image_bytes(o.image_decode.limits.max_bytes);
      l->set_max_image_pixels(o.image_decode.limits.max_pixels);
      l->set_image_rows(ctx_->translation.image->splice.rows);
      l->set_encoder_queue_items(o.encoder_pool.max_queued_items);
    }
    if (ctx_->translation.audio) {
      l->set_max_audio_per_request(o.max_audio_per_request);
      l->set_max_audio_bytes(o.audio_decode.limits.max_bytes);
      l->set_max_audio_seconds(ctx_->translation.audio->max_seconds);
      l->set_audio_rows_per_second(ctx_->translation.audio->rows_per_second);
      l->set_encoder_queue_items(o.encoder_pool.max_queued_items);
    }
    if (const std::optional<SeriesTranslation>& st = ctx_->translation.series) {
      l->set_max_series_length(st->max_length);
      l->set_series_channels(st->channels);
      l->set_series_patch(st->patch);
      l->set_forecast_horizon(st->horizon);
      l->set_max_forecast_horizon(st->max_forecast_horizon);
      l->set_max_series_per_request(st->max_series);
      if (ctx_->series != nullptr) {
        for (float level : ctx_->series->quantile_levels()) l->add_forecast_quantiles(level);
      }
      l->set_encoder_queue_items(o.encoder_pool.max_queued_items);
    }
    return absl::OkStatus();
  }();
  return FinishUnary(call, "GetModelInfo", owner, st);
}

}  // namespace modrwkv::server

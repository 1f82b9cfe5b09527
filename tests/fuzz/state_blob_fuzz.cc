// libFuzzer harness for engine/state_blob.cc, the decoder of client-supplied session states
// (Sessions.ImportSession). Each input is tried three ways so that coverage gets past the
// checksums without a seed corpus:
//   1. as a blob, raw;
//   2. as a blob whose magic, version, header size and both CRCs are patched to be valid, so the
//      shape, fingerprint, payload-size and pending-token checks see fuzzed values;
//   3. as the fields of a header plus a state, encoded with EncodeStateBlob: decoding must give
//      back the same header and the same state bits, or refuse a mismatched shape/fingerprint,
//      a non-finite state value or a negative token count.
// It also checks the SSE4.2 CRC-32C against the table on every input.
// On any outcome the decoder must not crash, must return only INVALID_ARGUMENT or
// FAILED_PRECONDITION, and on success must fill exactly the model's state size.
// The source is compiled into this target so that it carries the fuzzer's instrumentation
// however the engine library was built.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/serving/state_blob.cc"

namespace {

constexpr uint64_t kFingerprint = 0x0123456789abcdefULL;
constexpr size_t kHeaderBytes = 72;

// A tiny model: 2 layers, C = 8, two heads of 4: 2 * (2 * 8 + 2 * 4 * 4) = 96 floats.
modrwkv::ModelConfig TinyConfig() {
  modrwkv::ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 8;
  c.head_size = 4;
  c.n_head = 2;
  c.vocab_size = 300;
  return c;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

template <typename T>
void PutAt(std::string* s, size_t off, T v) {
  std::memcpy(s->data() + off, &v, sizeof(T));
}

// Decodes `blob` and checks the decoder's contract; the header when it was accepted.
std::optional<modrwkv::StateBlobHeader> DecodeChecked(std::string_view blob,
                                                      const modrwkv::ModelConfig& config,
                                                      std::vector<float>* state) {
  state->clear();
  absl::StatusOr<modrwkv::StateBlobHeader> h =
      modrwkv::DecodeStateBlob(blob, config, kFingerprint, state);
  if (!h.ok()) {
    Check(h.status().code() == absl::StatusCode::kInvalidArgument ||
          h.status().code() == absl::StatusCode::kFailedPrecondition);
    Check(!h.status().message().empty());
    return std::nullopt;
  }
  Check(static_cast<int64_t>(state->size()) == config.StateFloats());
  Check(blob.size() == kHeaderBytes + state->size() * 4);
  Check(std::memcmp(blob.data() + kHeaderBytes, state->data(), state->size() * 4) == 0);
  Check(h->n_layer == config.n_layer && h->n_embd == config.n_embd &&
        h->head_size == config.head_size && h->model_fingerprint == kFingerprint);
  Check(h->pending_token >= -1 && h->tokens >= 0);
  for (float f : *state) Check(std::isfinite(f));
  return *h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const modrwkv::ModelConfig config = TinyConfig();
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<float> state;

  // The SSE4.2 checksum and the table agree.
  Check(modrwkv::Crc32c(data, size) == modrwkv::Crc32cPortable(data, size));
  Check(modrwkv::Crc32c(data, size, 0x12345678) == modrwkv::Crc32cPortable(data, size, 0x12345678));

  // 1. Raw.
  (void)DecodeChecked(in, config, &state);

  // 2. Patched into a blob that passes the magic, version and checksum checks.
  if (size >= kHeaderBytes) {
    std::string blob(in);
    std::memcpy(blob.data(), "MRWKVST\0", 8);
    PutAt<uint32_t>(&blob, 8, modrwkv::kStateBlobVersion);
    PutAt<uint32_t>(&blob, 12, kHeaderBytes);
    // Often also the right fingerprint and shape, so the payload checks are reached.
    if (data[0] & 1) PutAt<uint64_t>(&blob, 16, kFingerprint);
    if (data[0] & 2) {
      PutAt<uint32_t>(&blob, 28, config.n_layer);
      PutAt<uint32_t>(&blob, 32, config.n_embd);
      PutAt<uint32_t>(&blob, 36, config.head_size);
    }
    if (data[0] & 4) PutAt<uint64_t>(&blob, 48, blob.size() - kHeaderBytes);
    PutAt<uint32_t>(&blob, 64,
                    modrwkv::Crc32c(blob.data() + kHeaderBytes, blob.size() - kHeaderBytes));
    PutAt<uint32_t>(&blob, 68, modrwkv::Crc32c(blob.data(), 68));
    (void)DecodeChecked(blob, config, &state);
  }

  // 3. Encoded from fuzzed fields: a round trip.
  FuzzedDataProvider p(data, size);
  modrwkv::StateBlobHeader h;
  const bool matching = p.ConsumeBool();
  h.model_fingerprint = matching ? kFingerprint : p.ConsumeIntegral<uint64_t>();
  h.n_layer = matching ? config.n_layer : p.ConsumeIntegralInRange<int>(0, 4);
  h.n_embd = matching ? config.n_embd : p.ConsumeIntegralInRange<int>(0, 16);
  h.head_size = matching ? config.head_size : p.ConsumeIntegralInRange<int>(0, 8);
  h.tokens = p.ConsumeBool() ? p.ConsumeIntegralInRange<int64_t>(0, 1 << 20)
                             : p.ConsumeIntegral<int64_t>();
  h.pending_token = p.ConsumeBool() ? p.ConsumeIntegralInRange<int32_t>(-1, (1 << 24) - 1)
                                    : p.ConsumeIntegral<int32_t>();
  const size_t floats = p.ConsumeBool() ? static_cast<size_t>(config.StateFloats())
                                        : p.ConsumeIntegralInRange<size_t>(0, 200);
  std::vector<float> in_state(floats);
  if (p.ConsumeBool()) {  // raw bits: NaNs and infinities too
    const std::vector<uint8_t> bytes = p.ConsumeBytes<uint8_t>(floats * 4);
    if (!bytes.empty()) std::memcpy(in_state.data(), bytes.data(), bytes.size());
  } else {
    for (float& f : in_state) f = p.ConsumeFloatingPoint<float>();
  }
  const std::string blob = modrwkv::EncodeStateBlob(h, in_state);
  const std::optional<modrwkv::StateBlobHeader> out = DecodeChecked(blob, config, &state);
  bool finite = true;
  for (float f : in_state) finite &= std::isfinite(f);
  const bool fits = h.model_fingerprint == kFingerprint && h.n_layer == config.n_layer &&
                    h.n_embd == config.n_embd && h.head_size == config.head_size &&
                    static_cast<int64_t>(floats) == config.StateFloats() && h.pending_token >= -1 &&
                    h.pending_token < (1 << 24) && h.tokens >= 0 && finite;
  Check(out.has_value() == fits);
  if (out) {
    Check(out->tokens == h.tokens && out->pending_token == h.pending_token);
    Check(std::memcmp(state.data(), in_state.data(), floats * 4) == 0);  // bits, NaNs included
  }
  return 0;
}

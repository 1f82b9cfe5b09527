#include "engine/serving/state_blob.h"

#include <array>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "engine/base/errors.h"

namespace modrwkv {
namespace {

constexpr char kMagic[8] = {'M', 'R', 'W', 'K', 'V', 'S', 'T', '\0'};
// magic(8) version(4) header_bytes(4) fingerprint(8) dtype(4) n_layer(4) n_embd(4) head_size(4)
// tokens(8) payload_bytes(8) pending_token(4) reserved(4) payload_crc(4) header_crc(4)
constexpr size_t kHeaderBytes = kStateBlobHeaderBytes;

std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli
    t[i] = c;
  }
  return t;
}

template <typename T>
void Put(std::string* s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s->append(b, sizeof(T));
}

template <typename T>
T Get(std::string_view s, size_t off) {
  T v;
  std::memcpy(&v, s.data() + off, sizeof(T));
  return v;
}

}  // namespace

uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = MakeTable();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
// The SSE4.2 CRC32 instruction computes CRC-32C (Castagnoli) 8 bytes at a time.
__attribute__((target("sse4.2"))) static uint32_t Crc32cSse42(const void* data, size_t n,
                                                              uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = __builtin_ia32_crc32qi(c32, *p);
  return ~c32;
}
#endif

uint32_t Crc32c(const void* data, size_t n, uint32_t crc) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return Crc32cSse42(data, n, crc);
#endif
  return Crc32cPortable(data, n, crc);
}

std::string EncodeStateBlob(const StateBlobHeader& h, absl::Span<const float> state) {
  std::string s;
  s.reserve(kHeaderBytes + state.size() * 4);
  s.append(kMagic, 8);
  Put<uint32_t>(&s, kStateBlobVersion);
  Put<uint32_t>(&s, kHeaderBytes);
  Put<uint64_t>(&s, h.model_fingerprint);
  Put<uint32_t>(&s, 0);  // f32
  Put<uint32_t>(&s, static_cast<uint32_t>(h.n_layer));
  Put<uint32_t>(&s, static_cast<uint32_t>(h.n_embd));
  Put<uint32_t>(&s, static_cast<uint32_t>(h.head_size));
  Put<int64_t>(&s, h.tokens);
  Put<uint64_t>(&s, state.size() * 4);
  Put<int32_t>(&s, h.pending_token);
  Put<uint32_t>(&s, 0);
  Put<uint32_t>(&s, Crc32c(state.data(), state.size() * 4));
  Put<uint32_t>(&s, Crc32c(s.data(), s.size()));
  s.append(reinterpret_cast<const char*>(state.data()), state.size() * 4);
  return s;
}

absl::StatusOr<StateBlobHeader> PeekStateBlobHeader(std::string_view blob) {
  if (blob.size() < kHeaderBytes || std::memcmp(blob.data(), kMagic, 8) != 0) {
    return absl::InvalidArgumentError("not a session state blob (bad magic or too short)");
  }
  const uint32_t version = Get<uint32_t>(blob, 8);
  if (version != kStateBlobVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session state blob has format version %d, this server reads version %d",
                        version, kStateBlobVersion));
  }
  if (Get<uint32_t>(blob, 12) != kHeaderBytes ||
      Get<uint32_t>(blob, 68) != Crc32c(blob.data(), 68)) {
    return absl::InvalidArgumentError("session state blob header is corrupt (checksum mismatch)");
  }
  StateBlobHeader h;
  h.format_version = version;
  h.model_fingerprint = Get<uint64_t>(blob, 16);
  h.n_layer = static_cast<int>(Get<uint32_t>(blob, 28));
  h.n_embd = static_cast<int>(Get<uint32_t>(blob, 32));
  h.head_size = static_cast<int>(Get<uint32_t>(blob, 36));
  h.tokens = Get<int64_t>(blob, 40);
  h.pending_token = Get<int32_t>(blob, 56);
  h.payload_crc32c = Get<uint32_t>(blob, 64);
  return h;
}

absl::StatusOr<StateBlobHeader> DecodeStateBlob(std::string_view blob, const ModelConfig& config,
                                                uint64_t fingerprint, std::vector<float>* state) {
  absl::StatusOr<StateBlobHeader> peeked = PeekStateBlobHeader(blob);
  if (!peeked.ok()) return peeked.status();
  const StateBlobHeader& h = *peeked;
  const uint32_t dtype = Get<uint32_t>(blob, 24);
  const uint64_t payload = Get<uint64_t>(blob, 48);
  if (dtype != 0) return absl::InvalidArgumentError("session state blob dtype is not f32");
  if (h.n_layer != config.n_layer || h.n_embd != config.n_embd || h.head_size != config.head_size) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrFormat(
            "session state is for a model with L%d C%d N%d; this server runs L%d C%d N%d",
            h.n_layer, h.n_embd, h.head_size, config.n_layer, config.n_embd, config.head_size)),
        reason::kStateModelMismatch);
  }
  if (h.model_fingerprint != fingerprint) {
    return WithReason(absl::FailedPreconditionError(
                          "session state was exported from a different model (fingerprint "
                          "mismatch)"),
                      reason::kStateModelMismatch);
  }
  if (payload != static_cast<uint64_t>(config.StateBytes()) ||
      blob.size() != kHeaderBytes + payload) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session state blob has %d payload bytes (blob %d bytes), expected %d",
                        payload, blob.size(), config.StateBytes()));
  }
  if (h.pending_token < -1 || h.pending_token >= (1 << 24)) {
    return absl::InvalidArgumentError("session state blob has an invalid pending token");
  }
  if (h.payload_crc32c != Crc32c(blob.data() + kHeaderBytes, payload)) {
    return absl::InvalidArgumentError("session state blob payload is corrupt (checksum mismatch)");
  }
  state->resize(payload / 4);
  std::memcpy(state->data(), blob.data() + kHeaderBytes, payload);
  // A checksum only proves the bytes arrived as sent; NaN or Inf would poison every later token.
  for (size_t i = 0; i < state->size(); ++i) {
    if (!std::isfinite((*state)[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "session state blob holds a non-finite value (%f) at float %d of layer %d", (*state)[i],
          i % (payload / 4 / config.n_layer), i / (payload / 4 / config.n_layer)));
    }
  }
  if (h.tokens < 0)
    return absl::InvalidArgumentError("session state blob has a negative token count");
  return h;
}

}  // namespace modrwkv

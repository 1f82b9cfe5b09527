// The portable form of one sequence's recurrent state: what ExportSession writes and
// ImportSession reads, so a session can move between server processes (or be kept on disk).
//
// Layout (little-endian):
//   magic "MRWKVST\0" | u32 format version | u32 header bytes | u64 model fingerprint |
//   u32 dtype (0 = f32) | u32 n_layer | u32 n_embd | u32 head_size | i64 tokens consumed |
//   u64 payload bytes | i32 pending token | u32 reserved (0) | u32 CRC-32C of the payload |
//   u32 CRC-32C of the header so far (72 bytes in all) |
//   payload: the Model's canonical state (per layer: att_shift[C], wkv[H][64][64], ffn_shift[C])
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/model_config.h"

namespace modrwkv {

inline constexpr uint32_t kStateBlobVersion = 1;
inline constexpr size_t kStateBlobHeaderBytes = 72;

struct StateBlobHeader {
  uint64_t model_fingerprint = 0;
  int n_layer = 0, n_embd = 0, head_size = 64;
  int64_t tokens = 0;  // tokens consumed into the state (informational)
  // The last generated token, sampled but not yet run through the model (-1: none): the next
  // request on the session feeds it first, so a session continues exactly where it stopped.
  int32_t pending_token = -1;
  // Read from a blob (PeekStateBlobHeader / DecodeStateBlob); EncodeStateBlob ignores them.
  uint32_t format_version = kStateBlobVersion;
  uint32_t payload_crc32c = 0;
};

std::string EncodeStateBlob(const StateBlobHeader& header, absl::Span<const float> state);

// The header alone, for callers that describe a blob without decoding it (export metadata):
// checks size, magic, version and the header checksum; INVALID_ARGUMENT otherwise.
absl::StatusOr<StateBlobHeader> PeekStateBlobHeader(std::string_view blob);

// Checks magic, version, checksums and that the blob fits `config` and `fingerprint`;
// INVALID_ARGUMENT / FAILED_PRECONDITION with what was wrong otherwise. Fills `state`.
absl::StatusOr<StateBlobHeader> DecodeStateBlob(std::string_view blob, const ModelConfig& config,
                                                uint64_t fingerprint, std::vector<float>* state);

// CRC-32C (Castagnoli); the SSE4.2 instruction where the CPU has it, else a table.
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t Crc32cPortable(const void* data, size_t n, uint32_t crc = 0);  // the table, for tests

}  // namespace modrwkv

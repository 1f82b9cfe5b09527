// Cache keys for encoder outputs: SHA-256 over the encoder id and the item's bytes.
//
// Why a cryptographic hash: a key collision would hand the features of one client's image to
// another client's request, and clients choose the bytes. Non-cryptographic 64/128-bit hashes
// (CityHash, the absl hash) have known ways to construct collisions, so they are not enough.
// SHA-256 costs ~1-2 GB/s with the SHA extensions that libcrypto uses, i.e. a few milliseconds for
// a large image, small beside the encoder itself.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace modrwkv::encoders {

using ContentKey = std::array<uint8_t, 32>;

// SHA-256(le64(encoder_id.size()) || encoder_id || bytes). The length prefix keeps the two
// parts from running into each other ("ab"+"c" vs "a"+"bc").
absl::StatusOr<ContentKey> ComputeContentKey(std::string_view encoder_id, std::string_view bytes);

// For hash maps: the digest is already uniform, so its first 8 bytes are a good hash.
struct ContentKeyHash {
  size_t operator()(const ContentKey& k) const {
    uint64_t h;
    std::memcpy(&h, k.data(), sizeof(h));
    return static_cast<size_t>(h);
  }
};

}  // namespace modrwkv::encoders

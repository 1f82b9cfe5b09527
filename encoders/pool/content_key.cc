// SHA-256 content keys through OpenSSL's libcrypto (EVP interface; hardware SHA where present).
#include "encoders/pool/content_key.h"

#include <openssl/evp.h>

#include <memory>

namespace modrwkv::encoders {

absl::StatusOr<ContentKey> ComputeContentKey(std::string_view encoder_id, std::string_view bytes) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  uint8_t len[8];
  uint64_t n = encoder_id.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  ContentKey key;
  unsigned int key_len = 0;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), len, sizeof(len)) != 1 ||
      EVP_DigestUpdate(ctx.get(), encoder_id.data(), encoder_id.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), key.data(), &key_len) != 1 || key_len != key.size()) {
    return absl::InternalError("SHA-256 of a media item failed in libcrypto");
  }
  return key;
}

}  // namespace modrwkv::encoders

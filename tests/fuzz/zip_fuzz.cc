// libFuzzer harness for torch.save archives: zip directory (local headers, data descriptors,
// CRC-32), data.pkl and storage lookup. Seeds: tests/fuzz/seeds/zip_fuzz (make_seeds.py).
// The reader sources are compiled into this target (not taken from the engine library) so that
// they carry the fuzzer's coverage and sanitizer instrumentation however the library was built.
#include <cstddef>
#include <cstdint>

#include "engine/checkpoint/crc32.cc"
#include "engine/checkpoint/pickle.cc"
#include "engine/checkpoint/torch_reader.cc"
#include "engine/checkpoint/zip_reader.cc"

namespace {

// Reads the first and last byte of a view so that ASan checks it lies in the input.
void Touch(const void* data, size_t n) {
  if (n == 0) return;
  const auto* p = static_cast<const volatile uint8_t*>(data);
  (void)p[0];
  (void)p[n - 1];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::Span<const uint8_t> in(data, size);
  if (auto entries = modrwkv::ReadZipDirectory(in); entries.ok()) {
    for (const modrwkv::ZipEntry& e : *entries) {
      if (auto bytes = modrwkv::StoredEntryBytes(in, e); bytes.ok()) {
        Touch(bytes->data(), bytes->size());
      }
    }
    (void)modrwkv::VerifyZipChecksums(in, *entries);
  }
  if (auto tensors = modrwkv::ReadTorchZip(in); tensors.ok()) {
    for (const auto& [name, t] : *tensors) Touch(t.data, t.nbytes);
  }
  return 0;
}

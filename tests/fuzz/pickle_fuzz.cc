// libFuzzer harness for the unpickler and the state-dict interpretation on top of it; every
// storage key resolves to one fixed buffer, so tensor bounds checks are exercised too.
// The reader sources are compiled into this target so that they carry the fuzzer's coverage and
// sanitizer instrumentation however the engine library was built.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/checkpoint/pickle.cc"
#include "engine/checkpoint/torch_reader.cc"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<uint8_t> storage(256, 0x3c);
  const absl::Span<const uint8_t> in(data, size);
  (void)modrwkv::pickle::Unpickle(in);
  auto tensors = modrwkv::ReadStateDictPickle(
      in, [](const std::string& key) -> absl::StatusOr<absl::Span<const uint8_t>> {
        if (key == "missing") return absl::NotFoundError("missing");
        // Key "short" gives a storage smaller than most tensors claim.
        return absl::Span<const uint8_t>(storage).subspan(0, key == "short" ? 3 : storage.size());
      });
  if (tensors.ok()) {
    for (const auto& [name, t] : *tensors) {
      if (t.nbytes == 0) continue;
      const auto* p = static_cast<const volatile uint8_t*>(t.data);
      (void)p[0];
      (void)p[t.nbytes - 1];
    }
  }
  return 0;
}

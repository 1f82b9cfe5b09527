// libFuzzer harness for the safetensors header reader.
// The reader source is compiled into this target so that it carries the fuzzer's coverage and
// sanitizer instrumentation however the engine library was built.
#include <cstddef>
#include <cstdint>

#include "engine/checkpoint/safetensors_reader.cc"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tensors = modrwkv::ReadSafetensors(absl::Span<const uint8_t>(data, size));
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

// Reading and writing model checkpoints: PyTorch `torch.save` archives (.pth) and .safetensors.
// Readers memory-map the file and hand out views into it; nothing is converted or copied here.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/base/tensor.h"

namespace modrwkv {

enum class CheckpointFormat { kTorchZip, kSafetensors };

// What Checkpoint::Open checks beyond the structure (which it always checks).
struct CheckpointOptions {
  // .pth: every stored zip entry against the CRC-32 its central directory records. It is the only
  // check that sees damage inside tensor bytes, and costs one extra pass over the file (measured
  // in docs/engine.md, "Checkpoint validation"). .safetensors files carry no checksum.
  bool verify_checksums = true;
};

// An opened checkpoint: a flat map from tensor name to a view of its bytes. The views stay valid
// for the lifetime of this object. Immutable after Open; safe to read from any thread.
class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  // Opens `path`, detecting the format from the file's content (zip magic vs. safetensors header),
  // not from its extension. Every failure is a Status naming the file and what was wrong.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path,
                                                          const CheckpointOptions& options = {});

  virtual CheckpointFormat format() const = 0;
  // Sorted by name.
  virtual const std::map<std::string, TensorView>& tensors() const = 0;

  const TensorView* Find(const std::string& name) const {
    auto it = tensors().find(name);
    return it == tensors().end() ? nullptr : &it->second;
  }
};

// Owned tensor data for writers.
struct OwnedTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, row-major, numel * DTypeSize(dtype)
};

// Writes a file that `torch.load` reads as a state dict (OrderedDict of name -> tensor), in the
// zip layout torch.save uses (archive/data.pkl, archive/data/N, archive/version).
absl::Status WriteTorchCheckpoint(const std::string& path, const std::vector<OwnedTensor>& tensors);

// Writes a .safetensors file (8-byte header length, JSON header, 8-byte aligned data).
absl::Status WriteSafetensors(const std::string& path, const std::vector<OwnedTensor>& tensors);

}  // namespace modrwkv

// Element types and non-owning tensor views shared by the checkpoint readers, writers and backends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace modrwkv {

enum class DType { kF32, kF16, kBF16 };

std::string_view DTypeName(DType t);  // "f32", "f16", "bf16"
size_t DTypeSize(DType t);

// A tensor inside a checkpoint: contiguous, row-major, little-endian, not owned (the data usually
// points into a memory-mapped file that the owning Checkpoint keeps alive).
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  // "[768,512]"
  std::string ShapeString() const;
};

std::string ShapeToString(const std::vector<int64_t>& shape);

// bf16 <-> f32 and f16 <-> f32 (round-to-nearest-even, NaN kept quiet; f16 overflows to
// infinity and keeps subnormals: IEEE binary16 as the F16C instructions and CUDA's
// __float2half_rn round).
float BF16ToF32(uint16_t v);
uint16_t F32ToBF16(float v);
float F16ToF32(uint16_t v);
uint16_t F32ToF16(float v);
constexpr float kF16Max = 65504.0f;  // the largest finite f16

// Converts `n` elements of `src` (of type `dtype`) to f32.
void ConvertToF32(DType dtype, const void* src, size_t n, float* dst);

}  // namespace modrwkv

#include "encoders/multimodal/vision_pipeline.h"

#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
VisionPipeline::VisionPipeline(std::unique_ptr<VisionTower> tower,
                               const PreprocessConfig& preprocess,
                               std::unique_ptr<AdapterChain> adapter, const DecodeOptions& decode,
                               std::string id, int rows)
    : tower_(std::move(tower)),
      preprocess_(preprocess),
      adapter_(std::move(adapter)),
      decode_(decode),
      id_(std::move(id)),
      rows_(rows) {}

absl::StatusOr<std::unique_ptr<VisionPipeline>> VisionPipeline::Create(
    std::unique_ptr<VisionTower> tower, const PreprocessConfig& preprocess,
    std::unique_ptr<AdapterChain> adapter, const DecodeOptions& decode, std::string id) {
  MODRWKV_RETURN_IF_ERROR(InitVips());
  const VitConfig& c = tower->config();
  if (preprocess.out_height() != c.image_size || preprocess.out_width() != c.image_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the preprocessor makes %dx%d images but the vision encoder takes %dx%d "
        "(preprocessor_config.json and config.json disagree)",
        preprocess.out_width(), preprocess.out_height(), c.image_size, c.image_size));
  }
  if (adapter->input_dim() != tower->output_dim()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the adapter takes rows of width %d but the vision encoder gives %d",
                        adapter->input_dim(), tower->output_dim()));
  }
  const int rows = adapter->OutputRows(tower->output_rows());
  if (rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the adapter turns the encoder's %d rows into none", tower->output_rows()));
  }
  return std::unique_ptr<VisionPipeline>(new VisionPipeline(
      std::move(tower), preprocess, std::move(adapter), decode, std::move(id), rows));
}

absl::StatusOr<std::shared_ptr<const PreparedItem>> VisionPipeline::Prepare(
    const MediaItem& item, cpu::ThreadPool* /*pool*/) const {
  const auto* data = reinterpret_cast<const uint8_t*>(item.bytes->data());
  MODRWKV_ASSIGN_OR_RETURN(
      RgbImage image,
      DecodeImage(absl::MakeConstSpan(data, item.bytes->size()), decode_, item.field));
  // Normalised pixels, [3][H][W].
  auto prepared = std::make_shared<PreparedItem>();
  prepared->shape = {3, preprocess_.out_height(), preprocess_.out_width()};
  prepared->data.resize(size_t{3} * preprocess_.out_height() * preprocess_.out_width());
  Preprocess(image, preprocess_, prepared->data.data());
  return prepared;
}

absl::Status VisionPipeline::EncodeBatch(absl::Span<const PreparedItem* const> items,
                                         std::vector<EmbeddingRows>* out,
                                         cpu::ThreadPool* pool) const {
  const int n = static_cast<int>(items.size());
  const size_t image_floats = size_t{3} * preprocess_.out_height() * preprocess_.out_width();
  std::vector<float> pixels(image_floats * n);
  for (int i = 0; i < n; ++i) {
    const std::vector<float>& p = items[i]->data;
    if (p.size() != image_floats) {
      return absl::InternalError(absl::StrFormat("prepared image %d holds %d values, expected %d",
                                                 i, p.size(), image_floats));
    }
    std::copy(p.begin(), p.end(), pixels.begin() + image_floats * i);
  }
  const size_t feature_floats = size_t{1} * tower_->output_rows() * tower_->output_dim();
  std::vector<float> features(feature_floats * n);
  MODRWKV_RETURN_IF_ERROR(tower_->Forward(pixels, n, absl::MakeSpan(features), pool));
  out->clear();
  out->resize(n);
  for (int i = 0; i < n; ++i) {
    EmbeddingRows& r = (*out)[i];
    MODRWKV_RETURN_IF_ERROR(
        adapter_->Run(absl::MakeConstSpan(features.data() + feature_floats * i, feature_floats),
                      tower_->output_rows(), &r.data, pool));
    r.rows = rows_;
    r.dim = adapter_->output_dim();
  }
  return absl::OkStatus();
}

absl::StatusOr<EmbeddingRows> VisionPipeline::EncodeImage(absl::Span<const uint8_t> bytes,
                                                          absl::string_view field,
                                                          cpu::ThreadPool* pool) const {
  MediaItem item;
  item.bytes = std::make_shared<const std::string>(reinterpret_cast<const char*>(bytes.data()),
                                                   bytes.size());
  item.field = std::string(field);
  MODRWKV_ASSIGN_OR_RETURN(std::shared_ptr<const PreparedItem> prepared, Prepare(item, pool));
  std::vector<EmbeddingRows> out;
  const PreparedItem* one = prepared.get();
  MODRWKV_RETURN_IF_ERROR(EncodeBatch(absl::MakeConstSpan(&one, 1), &out, pool));
  return std::move(out[0]);
}

}  // namespace modrwkv::encoders

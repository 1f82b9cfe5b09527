// AdapterChain: binds an AdapterSpec to checkpoint tensors (f32, packed for the CPU GEMM) and runs
// it over rows of encoder features. Conv1d is im2col + the same GEMM as the linear layers.
#include "encoders/adapter/adapter_chain.h"

#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "encoders/adapter/adapter_transformer.h"
#include "engine/base/status_macros.h"

namespace modrwkv::encoders {
namespace {

std::string Where(size_t i, const AdapterLayerSpec& l) {
  return absl::StrCat("adapter layer ", i, " (", AdapterOpName(l.op), ")");
}

// The tensor (after the stem) whose shape gives a weighted layer's input width.
const char* WidthTensor(const AdapterLayerSpec& l) {
  return l.op == AdapterOp::kTransformerEncoderLayer ? ".self_attn.in_proj_weight" : ".weight";
}

absl::StatusOr<const TensorView*> Need(const std::map<std::string, TensorView>& tensors,
                                       const std::string& name, const std::string& where) {
  auto it = tensors.find(name);
  if (it == tensors.end())
    return absl::NotFoundError(absl::StrCat(where, ": tensor ", name, " is missing"));
  return &it->second;
}

std::vector<float> ToF32(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, v.size(), v.data());
  return v;
}

absl::Status CheckVector(const TensorView& t, int64_t n) {
  if (t.shape.size() != 1 || t.shape[0] != n)
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", t.name, " has shape ", t.ShapeString(), ", expected [", n, "]"));
  return absl::OkStatus();
}

// Reads "<stem>.bias" when the spec wants one; a bias the spec does not expect is an error too
// (ignoring it would silently change the output).
absl::Status ReadBias(const std::map<std::string, TensorView>& tensors, const std::string& stem,
                      const AdapterLayerSpec& spec, int out, const std::string& where,
                      std::vector<float>* bias) {
  const std::string name = stem + ".bias";
  auto it = tensors.find(name);
  if (!spec.bias) {
    if (it != tensors.end())
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor ", name, " is present but the spec says bias: false"));
    return absl::OkStatus();
  }
  if (it == tensors.end())
    return absl::NotFoundError(absl::StrCat(
        where, ": tensor ", name, " is missing (set \"bias\": false for a layer without one)"));
  MODRWKV_RETURN_IF_ERROR(CheckVector(it->second, out));
  *bias = ToF32(it->second);
  return absl::OkStatus();
}

void LayerNormRows(const std::vector<float>& gamma, const std::vector<float>& beta, float eps,
                   bool residual, int rows, int d, float* x) {
  for (int r = 0; r < rows; ++r) {
    float* row = x + static_cast<size_t>(r) * d;
    double mean = 0;
    for (int i = 0; i < d; ++i) mean += row[i];
    mean /= d;
    double var = 0;
    for (int i = 0; i < d; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= d;  // biased, as torch's layer_norm
    const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int i = 0; i < d; ++i) {
      const float n = (row[i] - m) * inv * gamma[i] + beta[i];
      row[i] = residual ? row[i] + n : n;
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdapterChain>> AdapterChain::Create(
    const AdapterSpec& spec, const std::map<std::string, TensorView>& tensors,
    const std::string& prefix) {
  MODRWKV_RETURN_IF_ERROR(spec.Validate());
  std::unique_ptr<AdapterChain> chain(new AdapterChain());
  // Pass 1: weights and the widths their shapes give.
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const AdapterLayerSpec& s = spec.layers[i];
    const std::string where = Where(i, s);
    const std::string stem = prefix + s.weights;
    Layer l;
    l.spec = s;
    switch (s.op) {
      case AdapterOp::kLinear: {
        MODRWKV_ASSIGN_OR_RETURN(const TensorView* w, Need(tensors, stem + ".weight", where));
        if (w->shape.size() != 2 || w->shape[0] < 1 || w->shape[1] < 1)
          return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", w->name, " has shape ",
                                                         w->ShapeString(), ", expected [out, in]"));
        l.out_dim = static_cast<int>(w->shape[0]);
        l.in_dim = static_cast<int>(w->shape[1]);
        l.w = cpu::MakeMatrix(*w, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
        MODRWKV_RETURN_IF_ERROR(ReadBias(tensors, stem, s, l.out_dim, where, &l.bias));
        break;
      }
      case AdapterOp::kConv1d: {
        MODRWKV_ASSIGN_OR_RETURN(const TensorView* w, Need(tensors, stem + ".weight", where));
        if (w->shape.size() != 3 || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[2] < 1)
          return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", w->name, " has shape ",
                                                         w->ShapeString(),
                                                         ", expected [out, in, kernel]"));
        const int out = static_cast<int>(w->shape[0]), in = static_cast<int>(w->shape[1]),
                  k = static_cast<int>(w->shape[2]);
        if (s.kernel != 0 && s.kernel != k)
          return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", w->name, " has shape ",
                                                         w->ShapeString(), " (kernel ", k,
                                                         "), but the spec says kernel ", s.kernel));
        l.spec.kernel = k;
        l.in_dim = in;
        l.out_dim = out;
        // [out][in][k] -> [out][k][in], so that one im2col row is k whole input rows.
        const std::vector<float> src = ToF32(*w);
        std::vector<float> reordered(src.size());
        for (int o = 0; o < out; ++o)
          for (int c = 0; c < in; ++c)
            for (int j = 0; j < k; ++j)
              reordered[(static_cast<size_t>(o) * k + j) * in + c] =
                  src[(static_cast<size_t>(o) * in + c) * k + j];
        TensorView view;
        view.name = w->name;
        view.dtype = DType::kF32;
        view.shape = {out, static_cast<int64_t>(k) * in};
        view.data = reordered.data();
        view.nbytes = reordered.size() * sizeof(float);
        l.w = cpu::MakeMatrix(view, /*transposed=*/false, cpu::WType::kF32, cpu::Layout::kPanels);
        MODRWKV_RETURN_IF_ERROR(ReadBias(tensors, stem, s, out, where, &l.bias));
        break;
      }
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm: {
        MODRWKV_ASSIGN_OR_RETURN(const TensorView* g, Need(tensors, stem + ".weight", where));
        MODRWKV_ASSIGN_OR_RETURN(const TensorView* b, Need(tensors, stem + ".bias", where));
        if (g->shape.size() != 1 || g->shape[0] < 1)
          return absl::InvalidArgumentError(absl::StrCat(where, ": tensor ", g->name, " has shape ",
                                                         g->ShapeString(), ", expected [D]"));
        l.in_dim = l.out_dim = static_cast<int>(g->shape[0]);
        MODRWKV_RETURN_IF_ERROR(CheckVector(*b, l.in_dim));
        l.gamma = ToF32(*g);
        l.beta = ToF32(*b);
        break;
      }
      case AdapterOp::kTransformerEncoderLayer: {
        MODRWKV_ASSIGN_OR_RETURN(l.transformer,
                                 LoadTransformerLayer(tensors, stem, s.heads, where));
        l.in_dim = l.out_dim = l.transformer->d;
        break;
      }
      case AdapterOp::kRelu:
      case AdapterOp::kGelu:
      case AdapterOp::kPixelShuffle:
        break;
    }
    chain->layers_.push_back(std::move(l));
  }
  // The input width: the first weighted layer's, divided back through any pixel shuffles before it.
  size_t first = 0;
  while (!chain->layers_[first].spec.has_weights()) ++first;
  int64_t dim = chain->layers_[first].in_dim;
  for (size_t i = first; i-- > 0;) {
    const Layer& l = chain->layers_[i];
    if (l.spec.op != AdapterOp::kPixelShuffle) continue;
    const int64_t f2 = static_cast<int64_t>(l.spec.factor) * l.spec.factor;
    if (dim % f2 != 0)
      return absl::InvalidArgumentError(absl::StrCat(
          Where(first, chain->layers_[first].spec), ": input width ", dim, " (tensor ", prefix,
          chain->layers_[first].spec.weights, WidthTensor(chain->layers_[first].spec),
          ") is not a multiple of ", f2, ", the width factor of the pixel shuffle before it"));
    dim /= f2;
  }
  chain->input_dim_ = static_cast<int>(dim);
  // Pass 2: every width chains into the next.
  for (size_t i = 0; i < chain->layers_.size(); ++i) {
    Layer& l = chain->layers_[i];
    if (l.spec.has_weights()) {
      if (l.in_dim != dim)
        return absl::InvalidArgumentError(
            absl::StrCat(Where(i, l.spec), ": tensor ", prefix, l.spec.weights, WidthTensor(l.spec),
                         " takes width ", l.in_dim, " but the layer before gives ", dim));
    } else {
      l.in_dim = static_cast<int>(dim);
      l.out_dim = l.spec.op == AdapterOp::kPixelShuffle
                      ? static_cast<int>(dim * l.spec.factor * l.spec.factor)
                      : static_cast<int>(dim);
    }
    dim = l.out_dim;
  }
  chain->output_dim_ = static_cast<int>(dim);
  return chain;
}

int AdapterChain::LayerRows(const AdapterLayerSpec& spec, int rows, std::string* why) {
  switch (spec.op) {
    case AdapterOp::kConv1d: {
      const int64_t span = static_cast<int64_t>(rows) + 2 * spec.padding;
      if (span < spec.kernel) {
        *why = absl::StrCat("conv1d (", spec.weights, ") with kernel ", spec.kernel,
                            " and padding ", spec.padding, " needs at least ",
                            spec.kernel - 2 * spec.padding, " rows, got ", rows);
        return -1;
      }
      return static_cast<int>((span - spec.kernel) / spec.stride + 1);
    }
    case AdapterOp::kPixelShuffle: {
      const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(rows))));
      if (side * side != rows || side % spec.factor != 0) {
        *why = absl::StrCat("pixel_shuffle with factor ", spec.factor,
                            " needs a square number of rows whose side is a multiple of ",
                            spec.factor, ", got ", rows, " rows");
        return -1;
      }
      const int s = side / spec.factor;
      return s * s;
    }
    default:
      return rows;
  }
}

absl::StatusOr<int> AdapterChain::CheckedOutputRows(int input_rows) const {
  int rows = input_rows;
  for (size_t i = 0; i < layers_.size(); ++i) {
    std::string why;
    rows = LayerRows(layers_[i].spec, rows, &why);
    if (rows < 1)
      return absl::InvalidArgumentError(absl::StrCat(Where(i, layers_[i].spec), ": ", why));
  }
  return rows;
}

int AdapterChain::OutputRows(int input_rows) const {
  if (input_rows < 1) return 0;
  return CheckedOutputRows(input_rows).value_or(0);
}

absl::Status AdapterChain::UseRunner(const AdapterFactory& factory) {
  MODRWKV_ASSIGN_OR_RETURN(runner_, factory(*this));
  return absl::OkStatus();
}

absl::Status AdapterChain::Run(absl::Span<const float> in, int rows, std::vector<float>* out,
                               cpu::ThreadPool* pool) const {
  if (rows < 1) return absl::InvalidArgumentError(absl::StrCat("adapter got ", rows, " rows"));
  if (in.size() != static_cast<size_t>(rows) * input_dim_)
    return absl::InvalidArgumentError(
        absl::StrCat("adapter input has ", in.size(), " values, expected ", rows, " rows x ",
                     input_dim_, " = ", static_cast<size_t>(rows) * input_dim_));
  if (runner_) {
    MODRWKV_ASSIGN_OR_RETURN(const int out_rows, CheckedOutputRows(rows));
    out->resize(static_cast<size_t>(out_rows) * output_dim_);
    return runner_->Run(in.data(), rows, out_rows, out->data());
  }
  std::optional<cpu::ThreadPool> local;
  if (pool == nullptr) pool = &local.emplace(1);
  cpu::LinearRunner runner(pool);  // per call: its packing scratch is not shared
  std::vector<float> cur(in.begin(), in.end()), next, cols;
  int t = rows;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    std::string why;
    const int t_out = LayerRows(l.spec, t, &why);
    if (t_out < 1) return absl::InvalidArgumentError(absl::StrCat(Where(i, l.spec), ": ", why));
    const size_t d_in = l.in_dim, d_out = l.out_dim;
    switch (l.spec.op) {
      case AdapterOp::kConv1d: {
        // im2col: output row r reads input rows r*stride - padding + j, j < kernel (zeros outside).
        const int k = l.spec.kernel;
        cols.assign(static_cast<size_t>(t_out) * k * d_in, 0.0f);
        for (int r = 0; r < t_out; ++r)
          for (int j = 0; j < k; ++j) {
            const int src = r * l.spec.stride - l.spec.padding + j;
            if (src < 0 || src >= t) continue;
            std::memcpy(&cols[(static_cast<size_t>(r) * k + j) * d_in], &cur[src * d_in],
                        d_in * sizeof(float));
          }
        next.resize(static_cast<size_t>(t_out) * d_out);
        for (int r = 0; r < t_out && !l.bias.empty(); ++r)
          std::memcpy(&next[r * d_out], l.bias.data(), d_out * sizeof(float));
        runner.Run(l.w, cols.data(), static_cast<int64_t>(k) * d_in, t_out, next.data(), d_out,
                   /*accumulate=*/!l.bias.empty());
        cur.swap(next);
        break;
      }
      case AdapterOp::kLinear:
        next.resize(static_cast<size_t>(t) * d_out);
        for (int r = 0; r < t && !l.bias.empty(); ++r)
          std::memcpy(&next[r * d_out], l.bias.data(), d_out * sizeof(float));
        runner.Run(l.w, cur.data(), d_in, t, next.data(), d_out, /*accumulate=*/!l.bias.empty());
        cur.swap(next);
        break;
      case AdapterOp::kRelu:
        for (float& v : cur) v = v > 0 ? v : 0;
        break;
      case AdapterOp::kGelu:
        if (l.spec.gelu_tanh) {
          constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
          for (float& v : cur) v = 0.5f * v * (1 + std::tanh(kC * (v + 0.044715f * v * v * v)));
        } else {
          for (float& v : cur) v = 0.5f * v * (1 + std::erf(v * 0.7071067811865476f));
        }
        break;
      case AdapterOp::kLayerNorm:
      case AdapterOp::kResidualLayerNorm:
        LayerNormRows(l.gamma, l.beta, l.spec.eps, l.spec.op == AdapterOp::kResidualLayerNorm, t,
                      static_cast<int>(d_in), cur.data());
        break;
      case AdapterOp::kPixelShuffle: {
        // As the official ModalityProjector: rows on a side x side grid; output row (y, x) of the
        // (side/f)^2 grid holds the f x f block's rows in row-major order, each d_in wide.
        const int f = l.spec.factor;
        const int side = f * static_cast<int>(std::lround(std::sqrt(static_cast<double>(t_out))));
        const int s_out = side / f;
        next.resize(static_cast<size_t>(t_out) * d_out);
        for (int y = 0; y < s_out; ++y)
          for (int x = 0; x < s_out; ++x)
            for (int dy = 0; dy < f; ++dy)
              for (int dx = 0; dx < f; ++dx) {
                const size_t src = static_cast<size_t>(y * f + dy) * side + (x * f + dx);
                const size_t dst =
                    static_cast<size_t>(y * s_out + x) * d_out + (dy * f + dx) * d_in;
                std::memcpy(&next[dst], &cur[src * d_in], d_in * sizeof(float));
              }
        cur.swap(next);
        break;
      }
      case AdapterOp::kTransformerEncoderLayer:
        RunTransformerLayer(*l.transformer, l.spec, t, &cur, &runner, pool);
        break;
    }
    t = t_out;
  }
  *out = std::move(cur);
  return absl::OkStatus();
}

}  // namespace modrwkv::encoders

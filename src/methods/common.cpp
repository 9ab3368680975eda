#include "methods/common.hpp"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "salient/smoothgrad.hpp"

namespace salient {
namespace detail {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool all_finite(const at::Tensor& t) {
  // One reduction instead of a mask: NaN and Inf survive a sum, and a float32 sum in
  // double precision cannot overflow.
  return std::isfinite(t.sum(at::kDouble).item<double>());
}

at::Tensor checked_input(const at::Tensor& x, const char* method) {
  SALIENT_CHECK(x.defined(), method, ": input tensor is undefined");
  SALIENT_CHECK(x.dim() == 4, method, ": input must be a batch [N, C, H, W], got ", shape_str(x.sizes()));
  SALIENT_CHECK(x.size(0) > 0, method, ": input batch is empty");
  SALIENT_CHECK(at::isFloatingType(x.scalar_type()), method, ": input must be floating point, got ",
                x.scalar_type());
  at::Tensor xf = x.detach().to(at::kFloat);
  SALIENT_CHECK(all_finite(xf), method,
                ": input contains non-finite values (NaN or Inf)");
  return xf;
}

at::Tensor checked_input(const Model& model, const at::Tensor& x, const char* method) {
  return checked_input(x, method).to(model.device());
}

void check_finite(const at::Tensor& t, const char* method, const char* what) {
  SALIENT_CHECK(all_finite(t), method, ": non-finite values (NaN or Inf) in ",
                what);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

at::Tensor seeded_randn(at::IntArrayRef size, at::Generator& gen, const at::Tensor& like) {
  return at::randn(size, gen, like.options().device(at::kCPU)).to(like.device());
}

at::Tensor seeded_rand(at::IntArrayRef size, at::Generator& gen, const at::Tensor& like) {
  return at::rand(size, gen, like.options().device(at::kCPU)).to(like.device());
}

at::Tensor row_range(int64_t r0, int64_t r1, const at::Tensor& like) {
  return at::arange(r0, r1, at::TensorOptions().dtype(at::kLong).device(like.device()));
}

at::Tensor Inference::run(const Model& model, const at::Tensor& x) const {
  return optimized ? model.infer(x, precision) : model.predict(x);
}

Inference inference(const char* method, bool optimized, Precision precision) {
  SALIENT_CHECK(optimized || precision == Precision::Float32, method, ": precision ", precision_name(precision),
                " runs on the frozen inference copy: it needs optimized(true)");
  return Inference{optimized, precision};
}

std::vector<int64_t> sample_classes(const Model& model, const at::Tensor& x, const Target& target,
                                    const Inference& inference, Attribution* a) {
  if (target.is_function()) return {};
  if (!target.is_predicted()) return target.classes(x.size(0));
  a->output = inference.run(model, x);
  a->forward_samples += x.size(0);
  return to_vector(target.resolve(a->output));
}

at::Tensor classes_tensor(const std::vector<int64_t>& classes, int64_t n, const at::Tensor& like) {
  const auto opts = at::TensorOptions().dtype(at::kLong);
  return (classes.empty() ? at::full({n}, -1, opts) : at::tensor(classes, opts)).to(like.device());
}

at::Tensor batched_scores(const Model& model, int64_t rows, int64_t chunk,
                          const std::function<at::Tensor(int64_t, int64_t)>& outputs_of,
                          const std::function<int64_t(int64_t)>& sample_of, const std::vector<int64_t>& classes,
                          const Target& target, Score score) {
  // The chunks share the inference buffers; whatever runs next gets their memory back.
  struct Release {
    const Model& model;
    ~Release() { model.release_buffers(); }
  } release{model};
  std::vector<at::Tensor> scores;
  at::NoGradGuard no_grad;
  const std::vector<int64_t> bounds = even_chunks(rows, chunk);
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    const int64_t r0 = bounds[i], r1 = bounds[i + 1];
    at::Tensor out = outputs_of(r0, r1);
    if (classes.empty()) {
      scores.push_back(target.scores(out, at::Tensor(), score).to(at::kFloat));
      continue;
    }
    std::vector<int64_t> row_classes;
    for (int64_t r = r0; r < r1; ++r) row_classes.push_back(classes.at(sample_of(r)));
    Target rows_target = Target::per_sample(row_classes);
    scores.push_back(rows_target.scores(out, rows_target.resolve(out), score).to(at::kFloat));
  }
  return at::cat(scores);
}

std::function<at::Tensor(int64_t, int64_t)> input_rows(const Model& model,
                                                       std::function<at::Tensor(int64_t, int64_t)> make_rows,
                                                       Inference inference) {
  return [&model, make_rows, inference](int64_t r0, int64_t r1) { return inference.run(model, make_rows(r0, r1)); };
}

std::vector<int64_t> even_chunks(int64_t rows, int64_t max_chunk) {
  std::vector<int64_t> bounds{0};
  if (rows <= 0) return bounds;
  const int64_t chunks = (rows + std::max<int64_t>(1, max_chunk) - 1) / std::max<int64_t>(1, max_chunk);
  for (int64_t i = 1; i <= chunks; ++i) bounds.push_back(rows * i / chunks);
  return bounds;
}

void finish_cam(Attribution* a, const at::Tensor& raw, const at::Tensor& weights, int64_t height, int64_t width) {
  a->raw = raw;
  a->weights = weights;
  a->layer_map = at::relu(raw);
  a->map = at::upsample_bilinear2d(a->layer_map, {height, width}, /*align_corners=*/false);
}

Target fixed_target(const Model& model, const at::Tensor& x, const Target& target) {
  if (!target.is_predicted()) return target;
  return Target::per_sample(to_vector(target.resolve(model.predict(x))));
}

std::vector<int64_t> sample_shape(const at::Tensor& x) { return x.sizes().slice(1).vec(); }

}  // namespace detail
}  // namespace salient

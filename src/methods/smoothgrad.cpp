#include "salient/smoothgrad.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "methods/common.hpp"
#include "salient/gradient.hpp"

namespace salient {

int64_t chunk_rows(const Model& model, const at::Tensor& x, int64_t budget) {
  int64_t per_row = std::max<int64_t>(1, model.bytes_per_sample(detail::sample_shape(x)));
  return std::max<int64_t>(1, budget / per_row);
}

int64_t forward_chunk_rows(const Model& model, const at::Tensor& x, int64_t budget) {
  int64_t per_row = std::max<int64_t>(1, model.forward_bytes_per_sample(detail::sample_shape(x)));
  return std::max<int64_t>(1, budget / per_row);
}

Attribution smoothgrad(const Model& model, const at::Tensor& x, const Target& target,
                       const SmoothGradOptions& options) {
  at::Tensor xf = detail::checked_input(model, x, "smoothgrad");
  const int64_t n = options.n_samples();
  SALIENT_CHECK(n >= 1, "smoothgrad: n_samples must be >= 1, got ", n);
  SALIENT_CHECK(options.noise_level() >= 0, "smoothgrad: noise_level must be >= 0, got ",
                options.noise_level());
  SALIENT_CHECK(options.memory_budget() > 0, "smoothgrad: memory_budget must be > 0");
  const int64_t batch = xf.size(0);

  Attribution a;
  // The predicted class is fixed on the clean input (one forward); explicit targets and
  // score functions pass to the noisy rows as they are.
  Target resolved = target;
  if (target.is_predicted()) {
    a.output = model.forward(xf).output;
    a.forward_samples += batch;
    resolved = Target::per_sample(detail::to_vector(target.resolve(a.output)));
  }
  at::Tensor targets_out = at::full({batch}, -1, at::TensorOptions().dtype(at::kLong).device(xf.device()));

  at::Tensor flat = xf.flatten(1);
  at::Tensor stdev = options.noise_level() * (std::get<0>(flat.max(1)) - std::get<0>(flat.min(1)));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  NoiseSource noise = options.noise();
  if (!noise) {
    // One draw per noisy sample, shared by the batch (scaled by each example's std): an
    // example's map does not depend on the other examples or on its place in the batch.
    noise = [&gen](int64_t, const at::Tensor& xs, const at::Tensor& sd) {
      std::vector<int64_t> one = xs.sizes().vec();
      one[0] = 1;
      return detail::seeded_randn(one, gen, xs) * sd.view({-1, 1, 1, 1});
    };
  }

  // Rows are sample-major (row = s * batch + b), so the noise drawn for sample s is the
  // same whatever the chunk size.
  const int64_t rows = n * batch;
  const std::vector<int64_t> bounds = detail::even_chunks(rows, chunk_rows(model, xf, options.memory_budget()));
  at::Tensor sum = at::zeros_like(xf), sum_sq = at::zeros_like(xf);
  InputMethod base = options.base();
  if (!base) {
    Score score = options.score();
    base = [score](const Model& m, const at::Tensor& rows, const Target& t) {
      return vanilla_gradient(m, rows, t, VanillaOptions().score(score));
    };
  }
  at::Tensor current_noise;
  int64_t current_s = -1;
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    const int64_t r0 = bounds[i], r1 = bounds[i + 1];
    std::vector<at::Tensor> parts;
    std::vector<int64_t> examples;
    for (int64_t r = r0; r < r1;) {
      const int64_t s = r / batch, b0 = r % batch, b1 = std::min(batch, b0 + (r1 - r));
      if (s != current_s) {
        current_noise = noise(s, xf, stdev);
        SALIENT_CHECK(current_noise.sizes() == xf.sizes(), "smoothgrad: noise source returned ",
                      detail::shape_str(current_noise.sizes()), ", expected ", detail::shape_str(xf.sizes()));
        current_s = s;
      }
      parts.push_back(xf.slice(0, b0, b1) + current_noise.slice(0, b0, b1));
      for (int64_t b = b0; b < b1; ++b) examples.push_back(b);
      r += b1 - b0;
    }
    at::Tensor rows_x = at::cat(parts);
    at::Tensor idx = at::tensor(examples, at::TensorOptions().dtype(at::kLong)).to(xf.device());
    // The base sees each noisy row with its example's class (or the score function).
    Attribution b = base(model, rows_x, resolved.select(idx, batch));
    if (b.targets.defined()) targets_out.index_copy_(0, idx, b.targets);
    SALIENT_CHECK(b.map.sizes() == rows_x.sizes(), "smoothgrad: the base method returned ",
                  detail::shape_str(b.map.sizes()), " for rows ", detail::shape_str(rows_x.sizes()));
    sum.index_add_(0, idx, b.map);
    if (options.aggregation() != NoiseAggregation::Mean) sum_sq.index_add_(0, idx, b.map * b.map);
    a.forward_samples += b.forward_samples;
    a.backward_samples += b.backward_samples;
  }
  const double inv = 1.0 / static_cast<double>(n);
  switch (options.aggregation()) {
    case NoiseAggregation::Mean: a.map = sum * inv; break;
    case NoiseAggregation::MeanSquare: a.map = sum_sq * inv; break;
    case NoiseAggregation::Variance: a.map = sum_sq * inv - (sum * inv) * (sum * inv); break;
  }
  a.targets = targets_out;
  return a;
}

}  // namespace salient

#pragma once
// The noise tunnel (Captum's NoiseTunnel semantics) over any input-space method:
// SmoothGrad (Smilkov et al. 2017) averages the base method's map over n noisy copies
// of each input; SmoothGrad² averages its square; VarGrad (Adebayo et al. 2018) takes
// its variance (1/n, as Captum). Noise std = noise_level * (max - min) of each input
// (the SmoothGrad paper's and tf-keras-vis's form; Captum takes an absolute std).
//
//   auto a = salient::smoothgrad(model, x, salient::Target::predicted(),
//                                salient::SmoothGradOptions().n_samples(50).seed(7));
//   auto v = salient::smoothgrad(model, x, salient::Target::index(3),
//       salient::SmoothGradOptions().aggregation(salient::NoiseAggregation::Variance)
//           .base([](const salient::Model& m, const at::Tensor& xs, const salient::Target& t) {
//             return salient::integrated_gradients(m, xs, t); }));
//
// Samples run in chunks sized from memory_budget, so n = 1000 costs no more memory than
// a chunk. Randomness comes from a generator seeded with `seed`: the s-th noisy copy of
// every example uses the same standard-normal draw times the example's std, so a map does
// not depend on the rest of the batch. `noise` replaces the generator (tests use fixed noise). Cost: n times the base method's cost, per sample.
#include <functional>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

// Noise for sample `s` of every example: returns [N, C, H, W] given the batch x and the
// per-example std [N]. Called once per s, in increasing order of s.
using NoiseSource = std::function<at::Tensor(int64_t s, const at::Tensor& x, const at::Tensor& stdev)>;
// An input-space method run on noisy rows; its map must have the rows' shape.
using InputMethod = std::function<Attribution(const Model& model, const at::Tensor& x, const Target& target)>;

enum class NoiseAggregation {
  Mean,        // smoothgrad
  MeanSquare,  // smoothgrad_sq
  Variance,    // vargrad
};

struct SmoothGradOptions {
  SALIENT_ARG(int64_t, n_samples) = 20;
  SALIENT_ARG(double, noise_level) = 0.15;
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;  // bytes
  SALIENT_ARG(Score, score) = Score::Logit;                // for the default base
  SALIENT_ARG(NoiseAggregation, aggregation) = NoiseAggregation::Mean;
  SALIENT_ARG(NoiseSource, noise) = nullptr;
  SALIENT_ARG(InputMethod, base) = nullptr;  // default: the vanilla gradient with `score`
};

Attribution smoothgrad(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                       const SmoothGradOptions& options = {});

// Rows per chunk for samples like x's under `budget` bytes (at least 1): for forwards
// and backwards (gradient methods), and for forwards alone (forward-only methods and
// metrics).
int64_t chunk_rows(const Model& model, const at::Tensor& x, int64_t budget);
int64_t forward_chunk_rows(const Model& model, const at::Tensor& x, int64_t budget);

}  // namespace salient

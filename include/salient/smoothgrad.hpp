#pragma once
// SmoothGrad (Smilkov et al. 2017): the mean gradient over n noisy copies of each input,
// noise std = noise_level * (max - min) of that input (the paper's and tf-keras-vis's form).
//
//   auto a = salient::smoothgrad(model, x, salient::Target::predicted(),
//                                salient::SmoothGradOptions().n_samples(50).seed(7));
//
// Samples run in chunks sized from memory_budget, so n = 1000 costs no more memory than
// a chunk. Randomness comes from a generator seeded with `seed`; `noise` replaces it
// (tests use fixed noise). Cost: n forwards and n backwards to the input, per sample.
#include <functional>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

// Noise for sample `s` of every example: returns [N, C, H, W] given the batch x and the
// per-example std [N]. Called once per s, in increasing order of s.
using NoiseSource = std::function<at::Tensor(int64_t s, const at::Tensor& x, const at::Tensor& stdev)>;

struct SmoothGradOptions {
  SALIENT_ARG(int64_t, n_samples) = 20;
  SALIENT_ARG(double, noise_level) = 0.15;
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;  // bytes
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(NoiseSource, noise) = nullptr;
};

Attribution smoothgrad(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                       const SmoothGradOptions& options = {});

// Rows per chunk for samples of shape [C, H, W] under `budget` bytes (at least 1).
int64_t chunk_rows(const Model& model, const at::Tensor& x, int64_t budget);

}  // namespace salient

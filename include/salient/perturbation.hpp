#pragma once
// Forward-only, perturbation-based methods: no autograd graph, masked inputs run in
// batches sized from a memory budget, by default on the model's frozen,
// inference-optimised copy (Model::infer); `optimized(false)` uses the model as it is
// (what Captum does, for exact parity); `precision(Precision::BFloat16)` runs a bf16 copy,
// faster on CPUs with native bf16, scores close to float32's but not equal.
//
//   auto occ = salient::occlusion(model, x, salient::Target::index(3),
//                                 salient::OcclusionOptions().window(16).stride(8));
//   auto rise = salient::rise(model, x, salient::Target::predicted(),
//                             salient::RiseOptions().n_masks(4000).seed(1));
#include <cstdint>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

// Occlusion (Zeiler & Fergus 2014), as Captum's Occlusion with a square window over all
// channels: windows start at 0, stride, 2 stride, ... (ceil((D - window) / stride) + 1
// per side, the last one clipped at the border); each pixel gets the mean, over the
// windows covering it, of score(x) - score(x with the window set to `baseline`).
// map: [N,C,H,W], equal across channels. Cost: 1 + windows forwards per sample.
struct OcclusionOptions {
  SALIENT_ARG(int64_t, window) = 8;   // pixels, square
  SALIENT_ARG(int64_t, stride) = 4;   // pixels
  SALIENT_ARG(double, baseline) = 0.0;
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
Attribution occlusion(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                      const OcclusionOptions& options = {});

// RISE (Petsiuk et al. 2018): n_masks random masks, each a grid of cells kept with
// probability `keep`, upsampled bilinearly and shifted by a random offset within a cell;
// map = Σ_i score(x ⊙ M_i) M_i / (n_masks · keep), [N,1,H,W]. The same masks serve every
// sample. The score defaults to the class probability, as in the paper. Cost: n_masks
// forwards per sample.
struct RiseOptions {
  SALIENT_ARG(int64_t, n_masks) = 2000;
  SALIENT_ARG(int64_t, cell) = 0;     // cell size in pixels; 0: ceil(max(H, W) / 7), the paper's 7x7 grid
  SALIENT_ARG(double, keep) = 0.5;
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(Score, score) = Score::Probability;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
Attribution rise(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                 const RiseOptions& options = {});

// The masks RISE uses for an H x W input: [n_masks, 1, H, W] in [0, 1].
at::Tensor rise_masks(int64_t n_masks, int64_t height, int64_t width, const RiseOptions& options);

}  // namespace salient

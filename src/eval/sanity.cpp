#include <ATen/ATen.h>

#include <algorithm>

#include "eval/rank.hpp"
#include "methods/common.hpp"
#include "salient/metrics.hpp"

namespace salient {

SanityCurve cascading_randomization(const Model& model, const at::Tensor& x, const ExplainFn& explain,
                                    const Target& target, const SanityOptions& options) {
  SALIENT_CHECK(explain != nullptr, "sanity check: no method given");
  at::Tensor xf = detail::checked_input(model, x, "sanity check");
  // The class stays the original model's, as Adebayo et al. compare maps of one class.
  const Target fixed = detail::fixed_target(model, xf, target);
  const int64_t n = xf.size(0);
  Attribution original = explain(model, xf, fixed);
  at::Tensor abs0 = pixel_saliency(original.map, ChannelReduce::MaxAbs);
  at::Tensor signed0 = pixel_saliency(original.map, ChannelReduce::Sum);
  // The original's ranks serve every step.
  std::vector<std::vector<double>> abs0_ranks, signed0_ranks;
  for (int64_t i = 0; i < xf.size(0); ++i) {
    abs0_ranks.push_back(detail::mean_ranks(abs0[i]));
    signed0_ranks.push_back(detail::mean_ranks(signed0[i]));
  }

  SanityCurve curve;
  std::vector<std::string> blocks = model.parameter_blocks(options.min_blocks());
  SALIENT_CHECK(!blocks.empty(), "sanity check: model '", model.name(), "' has no parameters to randomise");
  std::reverse(blocks.begin(), blocks.end());  // from the output down
  const int64_t steps = static_cast<int64_t>(blocks.size());
  curve.spearman_abs = at::zeros({steps, n}, at::kDouble);
  curve.spearman = at::zeros({steps, n}, at::kDouble);
  curve.ssim = at::zeros({steps, n}, at::kDouble);
  Model random = model;
  for (int64_t s = 0; s < steps; ++s) {
    // Cascading: each step re-draws one more block on a copy of the previous step's model,
    // so the blocks before keep their draws; block s is seeded with seed + s (its original
    // weights' mean and std are still in the copy).
    random = random.randomized({blocks[s]}, options.seed() + static_cast<uint64_t>(s));
    Attribution a = explain(random, xf, fixed);
    at::Tensor abs1 = pixel_saliency(a.map, ChannelReduce::MaxAbs);
    at::Tensor signed1 = pixel_saliency(a.map, ChannelReduce::Sum);
    for (int64_t i = 0; i < n; ++i) {
      curve.spearman_abs[s][i] = detail::rank_correlation(abs0_ranks[i], detail::mean_ranks(abs1[i]));
      curve.spearman[s][i] = detail::rank_correlation(signed0_ranks[i], detail::mean_ranks(signed1[i]));
      curve.ssim[s][i] = ssim(abs0[i], abs1[i]);
    }
  }
  curve.blocks = blocks;
  return curve;
}

}  // namespace salient

#include "salient/gradient.hpp"

#include "methods/common.hpp"

namespace salient {

Attribution vanilla_gradient(const Model& model, const at::Tensor& x, const Target& target,
                             const VanillaOptions& options) {
  // A leaf of our own: the caller's tensor keeps its flags, and a model that writes
  // into its input cannot touch the caller's data.
  at::Tensor leaf = detail::checked_input(x, "vanilla").clone().requires_grad_(true);
  auto fr = model.forward(leaf, {}, Autograd::Full);
  Attribution a;
  a.targets = target.resolve(fr.output);
  at::Tensor s = target.scores(fr.output, a.targets, options.score());
  a.map = torch::autograd::grad({s.sum()}, {leaf})[0];
  detail::check_finite(a.map, "vanilla", "the input gradient");
  a.output = fr.output.detach();
  a.forward_samples = a.backward_samples = x.size(0);
  return a;
}

}  // namespace salient

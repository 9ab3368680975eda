#include "salient/gradient.hpp"

#include "methods/gradient_pass.hpp"

namespace salient {

void clamp_relu_gradients(const ForwardResult& forward) {
  for (const auto& r : forward.relus)
    if (r.requires_grad()) r.register_hook([](const at::Tensor& g) { return at::relu(g); });
}

namespace {

Attribution input_gradient(const Model& model, const at::Tensor& x, const Target& target, Score score,
                           const char* method) {
  return detail::from_gradient_pass(detail::gradient_pass(model, x, target, score, {method}, ""), method);
}

}  // namespace

Attribution vanilla_gradient(const Model& model, const at::Tensor& x, const Target& target,
                             const VanillaOptions& options) {
  return input_gradient(model, x, target, options.score(), "vanilla");
}

Attribution input_x_gradient(const Model& model, const at::Tensor& x, const Target& target,
                             const InputXGradientOptions& options) {
  return input_gradient(model, x, target, options.score(), "input_x_gradient");
}

Attribution guided_backprop(const Model& model, const at::Tensor& x, const Target& target,
                            const GuidedBackpropOptions& options) {
  return input_gradient(model, x, target, options.score(), "guided_backprop");
}

Attribution deconvnet(const Model& model, const at::Tensor& x, const Target& target, const DeconvnetOptions& options) {
  // Deconvnet's ReLUs pass gradients unmasked, which needs its own forward graph (a
  // BatchNorm-folded copy with the ReLUs rewritten).
  at::Tensor leaf = detail::checked_input(model, x, "deconvnet").clone().requires_grad_(true);
  auto fr = model.forward(leaf, {}, Autograd::Input, ReluGradient::Deconvnet);
  clamp_relu_gradients(fr);
  Attribution a;
  a.targets = target.resolve(fr.output);
  at::Tensor s = target.scores(fr.output, a.targets, options.score());
  a.map = torch::autograd::grad({s.sum()}, {leaf})[0];
  detail::check_finite(a.map, "deconvnet", "the input gradient");
  a.output = fr.output.detach();
  a.forward_samples = a.backward_samples = x.size(0);
  return a;
}

}  // namespace salient

#include "salient/gradient.hpp"

#include "methods/common.hpp"

namespace salient {

void clamp_relu_gradients(const ForwardResult& forward) {
  for (const auto& r : forward.relus)
    if (r.requires_grad()) r.register_hook([](const at::Tensor& g) { return at::relu(g); });
}

namespace {

Attribution input_gradient(const Model& model, const at::Tensor& x, const Target& target, Score score,
                           ReluGradient relu, const char* method) {
  // A leaf of our own: the caller's tensor keeps its flags, and a model that writes
  // into its input cannot touch the caller's data.
  at::Tensor leaf = detail::checked_input(x, method).clone().requires_grad_(true);
  auto fr = model.forward(leaf, {}, Autograd::Full, relu);
  if (relu != ReluGradient::Standard) clamp_relu_gradients(fr);
  Attribution a;
  a.targets = target.resolve(fr.output);
  at::Tensor s = target.scores(fr.output, a.targets, score);
  a.map = torch::autograd::grad({s.sum()}, {leaf})[0];
  detail::check_finite(a.map, method, "the input gradient");
  a.output = fr.output.detach();
  a.forward_samples = a.backward_samples = x.size(0);
  return a;
}

}  // namespace

Attribution vanilla_gradient(const Model& model, const at::Tensor& x, const Target& target,
                             const VanillaOptions& options) {
  return input_gradient(model, x, target, options.score(), ReluGradient::Standard, "vanilla");
}

Attribution input_x_gradient(const Model& model, const at::Tensor& x, const Target& target,
                             const InputXGradientOptions& options) {
  Attribution a = input_gradient(model, x, target, options.score(), ReluGradient::Standard, "input_x_gradient");
  a.map = a.map * x.detach().to(at::kFloat);
  return a;
}

Attribution guided_backprop(const Model& model, const at::Tensor& x, const Target& target,
                            const GuidedBackpropOptions& options) {
  return input_gradient(model, x, target, options.score(), ReluGradient::Guided, "guided_backprop");
}

Attribution deconvnet(const Model& model, const at::Tensor& x, const Target& target, const DeconvnetOptions& options) {
  return input_gradient(model, x, target, options.score(), ReluGradient::Deconvnet, "deconvnet");
}

}  // namespace salient

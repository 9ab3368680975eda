#include "salient/gradcam.hpp"

#include "methods/common.hpp"

namespace salient {

Attribution gradcam(const Model& model, const at::Tensor& x, const Target& target,
                    const GradCamOptions& options) {
  at::Tensor xf = detail::checked_input(x, "gradcam");
  std::string layer = options.layer().empty() ? model.default_cam_layer(detail::sample_shape(xf))
                                              : options.layer();
  auto fr = model.forward(xf, {layer}, Autograd::FromTaps);
  const at::Tensor& act = fr.taps[0];
  SALIENT_CHECK(act.dim() == 4, "gradcam: layer '", layer, "' outputs ", detail::shape_str(act.sizes()),
                "; Grad-CAM needs a 4-D [N, C, h, w] output (pick a convolutional layer)");
  Attribution a;
  a.layer = layer;
  a.targets = target.resolve(fr.output);
  at::Tensor s = target.scores(fr.output, a.targets, options.score());
  at::Tensor grad = torch::autograd::grad({s.sum()}, {act})[0];
  detail::check_finite(grad, "gradcam", ("the gradient at layer '" + layer + "'").c_str());
  at::NoGradGuard no_grad;
  a.weights = grad.mean({2, 3});
  a.raw = (a.weights.unsqueeze(-1).unsqueeze(-1) * act.detach()).sum(1, /*keepdim=*/true);
  a.layer_map = at::relu(a.raw);
  a.map = at::upsample_bilinear2d(a.layer_map, {xf.size(2), xf.size(3)}, /*align_corners=*/false);
  a.output = fr.output.detach();
  a.forward_samples = a.backward_samples = x.size(0);
  return a;
}

}  // namespace salient

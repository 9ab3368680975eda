#include "methods/gradient_pass.hpp"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>
#include <set>

#include "salient/gradient.hpp"

namespace salient {
namespace detail {

namespace {

const std::set<std::string> kInputGradient = {"vanilla", "input_x_gradient", "fullgrad"};
const std::set<std::string> kGuided = {"guided_backprop", "guided_gradcam"};
const std::set<std::string> kLayerGradient = {"gradcam",  "gradcam_plusplus",    "xgradcam",     "hirescam",
                                              "layercam", "gradcam_elementwise", "eigengradcam", "guided_gradcam"};
const std::set<std::string> kLayer = {"gradcam",  "gradcam_plusplus",    "xgradcam", "hirescam",     "layercam",
                                      "gradcam_elementwise", "eigencam", "eigengradcam", "guided_gradcam"};

bool any_of(const std::vector<std::string>& methods, const std::set<std::string>& set) {
  return std::any_of(methods.begin(), methods.end(), [&](const std::string& m) { return set.count(m) > 0; });
}

// Top eigenvector of symmetric PSD matrices g [N,k,k] (double): repeated squaring in
// float (g^256, renormalised each time) isolates the top eigendirection in eight k x k
// matmuls; its largest column, refined by power steps in double, is the eigenvector.
// Much cheaper than an eigendecomposition or SVD for the one vector needed; a top
// eigenvalue shared by two directions has no unique eigenvector under any method.
at::Tensor top_eigenvector(const at::Tensor& g) {
  auto unit = [](const at::Tensor& t, at::IntArrayRef dims) {
    return t / t.norm(2, dims, /*keepdim=*/true).clamp_min(1e-30);
  };
  at::Tensor p = unit(g.to(at::kFloat), {1, 2});
  for (int i = 0; i < 8; ++i) p = unit(at::bmm(p, p), {1, 2});
  at::Tensor col = p.norm(2, {1}).argmax(1);                                                     // [N]
  at::Tensor v = p.gather(2, col.view({-1, 1, 1}).expand({-1, p.size(1), 1})).to(at::kDouble);  // [N,k,1]
  for (int i = 0; i < 4; ++i) v = unit(at::bmm(g, v), {1});
  return v.squeeze(2);  // [N,k], unit length (zero for a zero matrix)
}

// First principal component of the positions: [N,C,h,w] -> [N,1,h,w], signed so that the
// map correlates positively with the channel mean of `m`. The projection M v1 of the
// centred [hw, C] matrix M on its first right singular vector comes from the smaller Gram
// matrix (M M^T or M^T M, in double).
at::Tensor principal_projection(const at::Tensor& m) {
  const int64_t n = m.size(0), c = m.size(1), h = m.size(2), w = m.size(3);
  at::Tensor rows = m.reshape({n, c, h * w}).transpose(1, 2).to(at::kDouble);  // [N, hw, C]
  rows = rows - rows.mean(1, /*keepdim=*/true);
  at::Tensor proj;
  if (h * w <= c) {
    // M M^T = U S^2 U^T and M v1 = s1 u1, s1^2 the Rayleigh quotient of u1.
    at::Tensor gram = at::bmm(rows, rows.transpose(1, 2));
    at::Tensor u = top_eigenvector(gram);
    at::Tensor s2 = (u * at::bmm(gram, u.unsqueeze(2)).squeeze(2)).sum(1, /*keepdim=*/true).clamp_min(0);
    proj = u * s2.sqrt();
  } else {
    at::Tensor v = top_eigenvector(at::bmm(rows.transpose(1, 2), rows));
    proj = at::bmm(rows, v.unsqueeze(2)).squeeze(2);  // [N, hw]
  }
  at::Tensor mean_map = m.mean(1).reshape({n, h * w}).to(at::kDouble);
  at::Tensor corr = (proj * (mean_map - mean_map.mean(1, /*keepdim=*/true))).sum(1, /*keepdim=*/true);
  proj = at::where(corr < 0, -proj, proj);
  return proj.to(m.scalar_type()).reshape({n, 1, h, w});
}

// Σ_c (t_c - min t_c) / (max t_c - min t_c + 1e-7), min and max over the positions of
// each (sample, channel): [N,C,h,w] -> [N,1,h,w]. Written as a weighted channel sum
// (one min/max pass and one matrix product over t) because FullGrad runs it over every
// bias layer's output.
at::Tensor minmax_channel_sum(const at::Tensor& t) {
  const int64_t n = t.size(0), h = t.size(2), w = t.size(3);
  at::Tensor flat = t.reshape({n, t.size(1), h * w});
  auto range = at::aminmax(flat, 2);
  const at::Tensor& lo = std::get<0>(range);
  at::Tensor inv = 1.0 / (std::get<1>(range) - lo + 1e-7);  // [N,C]
  at::Tensor sum = at::bmm(inv.unsqueeze(1), flat).squeeze(1) - (lo * inv).sum(1, /*keepdim=*/true);
  return sum.view({n, 1, h, w});
}

// The raw CAM [N,1,h,w] of a gradient variant; *weights gets [N,C] channel weights for
// the variants that have them.
at::Tensor cam_raw(const std::string& method, const at::Tensor& a, const at::Tensor& g, at::Tensor* weights) {
  auto weighted = [&](const at::Tensor& w) {
    *weights = w;
    return (w.unsqueeze(-1).unsqueeze(-1) * a).sum(1, /*keepdim=*/true);
  };
  if (method == "gradcam" || method == "guided_gradcam") return weighted(g.mean({2, 3}));
  if (method == "gradcam_plusplus") {
    at::Tensor g2 = g * g, g3 = g2 * g;
    at::Tensor alpha = g2 / (2 * g2 + a.sum({2, 3}, /*keepdim=*/true) * g3 + 1e-6);
    alpha = at::where(g != 0, alpha, at::zeros_like(alpha));
    return weighted((at::relu(g) * alpha).sum({2, 3}));
  }
  if (method == "xgradcam") return weighted((g * a / (a.sum({2, 3}, /*keepdim=*/true) + 1e-7)).sum({2, 3}));
  if (method == "hirescam") return (g * a).sum(1, /*keepdim=*/true);
  if (method == "layercam") return (at::relu(g) * a).sum(1, /*keepdim=*/true);
  if (method == "gradcam_elementwise") return at::relu(g * a).sum(1, /*keepdim=*/true);
  if (method == "eigencam") return principal_projection(a);
  if (method == "eigengradcam") return principal_projection(g * a);
  SALIENT_FAIL("internal: '", method, "' is not a gradient CAM variant");
}

}  // namespace

bool shares_gradient_pass(const std::string& method) {
  return kInputGradient.count(method) || kGuided.count(method) || kLayer.count(method);
}

GradientPass gradient_pass(const Model& model, const at::Tensor& x, const Target& target, Score score,
                           const std::vector<std::string>& methods, const std::string& layer) {
  const char* name = methods.size() == 1 ? methods[0].c_str() : "explain";
  for (const auto& m : methods) SALIENT_CHECK(shares_gradient_pass(m), "internal: '", m, "' has no gradient pass");
  GradientPass p;
  p.x = checked_input(x, name);
  const bool input_grad = any_of(methods, kInputGradient), guided = any_of(methods, kGuided);
  const bool cam = any_of(methods, kLayer), cam_grad = any_of(methods, kLayerGradient);
  const bool bias = std::count(methods.begin(), methods.end(), "fullgrad") > 0;

  std::vector<std::string> taps;
  if (cam) {
    p.layer = layer.empty() ? model.default_cam_layer(sample_shape(p.x)) : layer;
    taps.push_back(p.layer);
  }
  if (bias) {
    p.bias_layers = model.bias_layers();
    for (const auto& l : p.bias_layers) taps.push_back(l.path);
  }
  // A leaf of our own: the caller's tensor keeps its flags, and a model that writes into
  // its input cannot touch the caller's data.
  const bool to_input = input_grad || guided;
  at::Tensor leaf = to_input ? p.x.clone().requires_grad_(true) : p.x;
  Autograd mode = to_input ? Autograd::Full : cam_grad ? Autograd::FromTaps : Autograd::Off;
  auto fr = model.forward(leaf, taps, mode, guided ? ReluGradient::Guided : ReluGradient::Standard);
  const int64_t n = p.x.size(0);
  p.forward_samples = n;
  if (cam) {
    SALIENT_CHECK(fr.taps[0].dim() == 4, name, ": layer '", p.layer, "' outputs ", shape_str(fr.taps[0].sizes()),
                  "; CAM methods need a 4-D [N, C, h, w] output (pick a convolutional layer)");
    p.act = fr.taps[0].detach();
  }
  p.targets = target.resolve(fr.output);
  p.output = fr.output.detach();
  if (mode == Autograd::Off) return p;

  at::Tensor s = target.scores(fr.output, p.targets, score).sum();
  // The standard backward: to the input, the CAM layer and the bias layers at once.
  std::vector<at::Tensor> wrt;
  if (input_grad) wrt.push_back(leaf);
  if (cam_grad) wrt.push_back(fr.taps[0]);
  if (bias) wrt.insert(wrt.end(), fr.taps.begin() + (cam ? 1 : 0), fr.taps.end());
  if (!wrt.empty()) {
    auto grads = torch::autograd::grad({s}, wrt, {}, /*retain_graph=*/guided, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    size_t k = 0;
    if (input_grad) {
      p.input_grad = grads[k++];
      SALIENT_CHECK(p.input_grad.defined(), name, ": the score does not depend on the input");
      check_finite(p.input_grad, name, "the input gradient");
    }
    if (cam_grad) {
      p.act_grad = grads[k++];
      SALIENT_CHECK(p.act_grad.defined(), name, ": the score does not depend on layer '", p.layer, "'");
      check_finite(p.act_grad, name, ("the gradient at layer '" + p.layer + "'").c_str());
    }
    for (; k < grads.size(); ++k) {
      if (grads[k].defined())
        check_finite(grads[k], name, ("the gradient at layer '" + p.bias_layers[p.bias_grads.size()].path + "'").c_str());
      p.bias_grads.push_back(grads[k]);
    }
    p.backward_samples += n;
  }
  if (guided) {
    // The ReLU hooks go on only now, so the backward above stayed standard.
    clamp_relu_gradients(fr);
    p.guided_grad = torch::autograd::grad({s}, {leaf})[0];
    check_finite(p.guided_grad, name, "the guided input gradient");
    p.backward_samples += n;
  }
  return p;
}

Attribution from_gradient_pass(const GradientPass& p, const std::string& method) {
  at::NoGradGuard no_grad;
  Attribution a;
  a.output = p.output;
  a.targets = p.targets;
  a.forward_samples = p.forward_samples;
  a.backward_samples = p.backward_samples;
  const int64_t height = p.x.size(2), width = p.x.size(3);
  if (method == "vanilla") {
    a.map = p.input_grad;
  } else if (method == "input_x_gradient") {
    a.map = p.input_grad * p.x;
  } else if (method == "guided_backprop") {
    a.map = p.guided_grad;
  } else if (method == "fullgrad") {
    at::Tensor map = minmax_channel_sum((p.x * p.input_grad).abs_());
    // Bilinear resizing is linear: the terms of one resolution (channels and layers) are
    // summed first and resized once.
    std::map<std::pair<int64_t, int64_t>, at::Tensor> by_size;
    for (size_t i = 0; i < p.bias_layers.size(); ++i) {
      const at::Tensor& g = p.bias_grads[i];
      if (!g.defined() || g.dim() != 4 || g.size(1) != p.bias_layers[i].bias.numel()) continue;
      at::Tensor term = minmax_channel_sum((p.bias_layers[i].bias.view({1, -1, 1, 1}) * g).abs_());
      at::Tensor& acc = by_size[{g.size(2), g.size(3)}];
      acc = acc.defined() ? acc + term : term;
    }
    for (const auto& kv : by_size)
      map = map + at::upsample_bilinear2d(kv.second, {height, width}, /*align_corners=*/false);
    a.map = map;
  } else if (kLayer.count(method)) {
    a.layer = p.layer;
    at::Tensor weights;
    at::Tensor raw = cam_raw(method, p.act, p.act_grad, &weights);
    finish_cam(&a, raw, weights, height, width);
    // Captum's GuidedGradCam: the CAM upsampled by nearest neighbour times guided backprop.
    if (method == "guided_gradcam") a.map = p.guided_grad * at::upsample_nearest2d(a.layer_map, {height, width});
  } else {
    SALIENT_FAIL("internal: '", method, "' has no gradient pass");
  }
  return a;
}

}  // namespace detail
}  // namespace salient

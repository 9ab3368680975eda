#include "methods/gradient_pass.hpp"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
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

// Min and max of |s·row[i]| over i < n; *nan is 0 unless some row[i] is NaN or infinite
// (row[i] - row[i] is NaN then). A hand-vectorised loop on x86: compilers do not vectorise
// floating-point min/max reductions without fast-math.
void channel_range(const float* row, int64_t n, float s, float* mn, float* mx, float* nan) {
  int64_t i = 0;
  float lo = std::abs(s * row[0]), hi = lo, bad = 0;
#if defined(__SSE2__)
  const __m128 sign = _mm_set1_ps(-0.0f), vs = _mm_set1_ps(s);
  __m128 vlo = _mm_set1_ps(lo), vhi = vlo, vbad = _mm_setzero_ps();
  for (; i + 4 <= n; i += 4) {
    const __m128 g = _mm_loadu_ps(row + i);
    const __m128 v = _mm_andnot_ps(sign, _mm_mul_ps(vs, g));
    vlo = _mm_min_ps(vlo, v);
    vhi = _mm_max_ps(vhi, v);
    vbad = _mm_add_ps(vbad, _mm_sub_ps(g, g));
  }
  float l4[4], h4[4], b4[4];
  _mm_storeu_ps(l4, vlo), _mm_storeu_ps(h4, vhi), _mm_storeu_ps(b4, vbad);
  for (int j = 0; j < 4; ++j) lo = std::min(lo, l4[j]), hi = std::max(hi, h4[j]), bad += b4[j];
#endif
  for (; i < n; ++i) {
    const float v = std::abs(s * row[i]);
    lo = std::min(lo, v), hi = std::max(hi, v), bad += row[i] - row[i];
  }
  *mn = lo, *mx = hi, *nan = bad;
}

// Σ_c (t_c - min t_c) / (max t_c - min t_c + 1e-7) with t_c = |scale_c · g_c|, min and
// max over the positions of each (sample, channel): [N,C,h,w] -> [N,1,h,w]. FullGrad runs
// it over every bias layer's gradient (11M values on a ResNet-50), so float CPU input is
// read once: each channel's range is found and its term added while the channel is still
// in cache, into one accumulator per thread. `scale` [C] may be undefined (1). *finite,
// when given: whether g had only finite values (checked on the way, without a pass of its
// own).
at::Tensor abs_minmax_channel_sum(const at::Tensor& g, const at::Tensor& scale, bool* finite = nullptr) {
  const int64_t n = g.size(0), c = g.size(1), h = g.size(2), w = g.size(3), hw = h * w;
  if (g.scalar_type() != at::kFloat || !g.device().is_cpu()) {
    at::Tensor t = (scale.defined() ? scale.view({1, -1, 1, 1}).to(g.dtype()) * g : g).abs();
    at::Tensor flat = t.reshape({n, c, hw});
    auto range = at::aminmax(flat, 2);
    const at::Tensor& lo = std::get<0>(range);
    at::Tensor inv = 1.0 / (std::get<1>(range) - lo + 1e-7);  // [N,C]
    at::Tensor sum = at::bmm(inv.unsqueeze(1), flat).squeeze(1) - (lo * inv).sum(1, /*keepdim=*/true);
    if (finite) *finite = all_finite(g);
    return sum.view({n, 1, h, w});
  }
  if (finite) *finite = true;
  if (n * c * hw == 0) return at::zeros({n, 1, h, w}, at::kFloat);
  const at::Tensor gc = g.contiguous();
  const at::Tensor sc = scale.defined() ? scale.to(at::kFloat).contiguous() : at::ones({c}, at::kFloat);
  const float* gp = gc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  const int64_t threads = at::get_num_threads();
  std::vector<float> acc(threads * n * hw, 0.0f), offset(threads * n, 0.0f), bad(threads, 0.0f);
  at::parallel_for(0, n * c, 1, [&](int64_t b, int64_t e) {
    const int64_t t = std::min<int64_t>(at::get_thread_num(), threads - 1);
    for (int64_t k = b; k < e; ++k) {
      const int64_t smp = k / c;
      const float s = sp[k % c];
      const float* row = gp + k * hw;
      float mn, mx, nan;
      channel_range(row, hw, s, &mn, &mx, &nan);
      bad[t] += nan;
      const float inv = 1.0f / (mx - mn + 1e-7f);
      offset[t * n + smp] += mn * inv;
      float* a = acc.data() + (t * n + smp) * hw;
      for (int64_t q = 0; q < hw; ++q) a[q] += inv * std::abs(s * row[q]);
    }
  });
  if (finite) *finite = std::all_of(bad.begin(), bad.end(), [](float v) { return v == 0; });
  at::Tensor out = at::empty({n, 1, h, w}, at::kFloat);
  float* op = out.data_ptr<float>();
  for (int64_t smp = 0; smp < n; ++smp) {
    float off = 0;
    for (int64_t t = 0; t < threads; ++t) off += offset[t * n + smp];
    float* o = op + smp * hw;
    for (int64_t q = 0; q < hw; ++q) o[q] = -off;
    for (int64_t t = 0; t < threads; ++t) {
      const float* a = acc.data() + (t * n + smp) * hw;
      for (int64_t q = 0; q < hw; ++q) o[q] += a[q];
    }
  }
  return out;
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
    for (const auto& l : p.bias_layers) taps.push_back(l.tap);
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
  // Each bias layer's gradient becomes its FullGrad term as the backward produces it,
  // summed per resolution: the gradients of the whole network are never held at once. The
  // hooks write only to `sink`; turning it off keeps a later (guided) backward out.
  struct BiasSink {
    bool active = true;
    std::string error;  // the first non-finite bias gradient
    std::map<std::pair<int64_t, int64_t>, at::Tensor> terms;
  };
  auto sink = std::make_shared<BiasSink>();
  if (bias) {
    const size_t first = cam ? 1 : 0;
    for (size_t i = 0; i < p.bias_layers.size(); ++i) {
      const at::Tensor& tap = fr.taps[first + i];
      if (!tap.requires_grad() || tap.dim() != 4 || tap.size(1) != p.bias_layers[i].bias.numel()) continue;
      const BiasLayer& l = p.bias_layers[i];
      at::Tensor scale = l.tap_scale.defined() ? l.bias * l.tap_scale : l.bias;
      tap.register_hook([sink, scale, path = l.path, name](const at::Tensor& g) {
        if (!sink->active) return;
        bool finite = true;
        at::Tensor term = abs_minmax_channel_sum(g, scale, &finite);
        if (!finite && sink->error.empty())
          sink->error = std::string(name) + ": non-finite values (NaN or Inf) in the gradient at layer '" + path + "'";
        at::Tensor& acc = sink->terms[{g.size(2), g.size(3)}];
        acc = acc.defined() ? acc.add_(term) : term;
      });
    }
    // The hooks hold what they need: the bias layers' outputs can go as soon as the
    // backward is done with them.
    for (size_t i = first; i < fr.taps.size(); ++i) fr.taps[i] = at::Tensor();
  }
  // The standard backward: to the input and the CAM layer at once.
  std::vector<at::Tensor> wrt;
  if (input_grad) wrt.push_back(leaf);
  if (cam_grad) wrt.push_back(fr.taps[0]);
  if (!wrt.empty()) {
    auto grads = torch::autograd::grad({s}, wrt, {}, /*retain_graph=*/guided, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    sink->active = false;
    SALIENT_CHECK(sink->error.empty(), sink->error);
    p.bias_terms = std::move(sink->terms);
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
    at::Tensor map = abs_minmax_channel_sum(p.x * p.input_grad, at::Tensor());  // checked in the pass
    // Bilinear resizing is linear: the terms of one resolution (channels and layers) were
    // summed first and are resized once.
    for (const auto& kv : p.bias_terms)
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

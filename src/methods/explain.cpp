#include "salient/explain.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "methods/gradient_pass.hpp"
#include "salient/cam.hpp"
#include "salient/gradient.hpp"
#include "salient/perturbation.hpp"
#include "salient/smoothgrad.hpp"

namespace salient {

namespace {

const char* kInput = "input gradient";
const char* kTunnel = "noise tunnel";
const char* kPerturbation = "perturbation";
const char* kCamGrad = "cam gradient";
const char* kCamFree = "cam gradient-free";

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::vector<std::string> all_names() {
  std::vector<std::string> names;
  for (const auto& m : methods()) names.push_back(m.name);
  return names;
}

// A number when all of s is one.
std::optional<double> number(const std::string& s) {
  try {
    size_t used = 0;
    double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

Score score_or(const ExplainSettings& s, Score fallback) { return s.score ? *s.score : fallback; }

int64_t budget(const ExplainSettings& s) { return s.memory_budget ? *s.memory_budget : int64_t(1) << 30; }
Precision precision(const ExplainSettings& s) { return s.precision.value_or(Precision::Float32); }

IntegratedGradientsOptions ig_options(const ExplainSettings& s) {
  IntegratedGradientsOptions o;
  o.score(score_or(s, Score::Logit)).memory_budget(budget(s));
  if (s.n_steps) o.n_steps(*s.n_steps);
  if (s.integration) o.integration(*s.integration);
  if (s.seed) o.seed(*s.seed);
  if (s.baseline_tensor.defined()) {
    o.baseline(s.baseline_tensor);
  } else if (auto v = number(s.baseline)) {
    o.baseline(at::full({1}, *v));  // expanded to the input's shape below
  } else if (!s.baseline.empty()) {
    o.baseline_kind(baseline_kind_from_string(s.baseline));
  }
  return o;
}

Attribution run_single(const Model& model, const at::Tensor& x, const std::string& name, const Target& target,
                       const ExplainSettings& s);

Attribution run_noise_tunnel(const Model& model, const at::Tensor& x, const std::string& name, const Target& target,
                             const ExplainSettings& s) {
  SmoothGradOptions o;
  o.score(score_or(s, Score::Logit)).memory_budget(budget(s));
  if (s.samples) o.n_samples(*s.samples);
  if (s.noise_level) o.noise_level(*s.noise_level);
  if (s.seed) o.seed(*s.seed);
  o.aggregation(name == "smoothgrad"      ? NoiseAggregation::Mean
                : name == "smoothgrad_sq" ? NoiseAggregation::MeanSquare
                                          : NoiseAggregation::Variance);
  const std::string base = s.base.empty() ? "vanilla" : s.base;
  if (base != "vanilla") {
    ExplainSettings inner = s;
    o.base([base, inner](const Model& m, const at::Tensor& rows, const Target& t) {
      return run_single(m, rows, base, t, inner);
    });
  }
  return smoothgrad(model, x, target, o);
}

Attribution run_single(const Model& model, const at::Tensor& x, const std::string& name, const Target& target,
                       const ExplainSettings& s) {
  if (detail::shares_gradient_pass(name)) {
    auto pass = detail::gradient_pass(model, x, target, score_or(s, Score::Logit), {name}, s.layer);
    return detail::from_gradient_pass(pass, name);
  }
  if (name == "deconvnet") return deconvnet(model, x, target, DeconvnetOptions().score(score_or(s, Score::Logit)));
  if (name == "integrated_gradients") {
    IntegratedGradientsOptions o = ig_options(s);
    if (o.baseline().defined() && o.baseline().dim() == 1) o.baseline(o.baseline().expand(x.sizes()).contiguous());
    return integrated_gradients(model, x, target, o);
  }
  if (name == "smoothgrad" || name == "smoothgrad_sq" || name == "vargrad") return run_noise_tunnel(model, x, name, target, s);
  if (name == "occlusion") {
    OcclusionOptions o;
    o.score(score_or(s, Score::Logit)).memory_budget(budget(s)).precision(precision(s));
    if (s.window) o.window(*s.window);
    if (s.stride) o.stride(*s.stride);
    if (auto v = number(s.baseline)) o.baseline(*v);
    return occlusion(model, x, target, o);
  }
  if (name == "rise") {
    RiseOptions o;
    o.score(score_or(s, Score::Probability)).memory_budget(budget(s)).precision(precision(s));
    if (s.masks) o.n_masks(*s.masks);
    if (s.cell) o.cell(*s.cell);
    if (s.keep) o.keep(*s.keep);
    if (s.seed) o.seed(*s.seed);
    return rise(model, x, target, o);
  }
  if (name == "scorecam")
    return scorecam(model, x, target,
                    ScoreCamOptions().layer(s.layer).score(score_or(s, Score::Logit)).memory_budget(budget(s))
                        .precision(precision(s)));
  if (name == "faster_scorecam") {
    FasterScoreCamOptions o;
    o.layer(s.layer).score(score_or(s, Score::Logit)).memory_budget(budget(s)).precision(precision(s));
    if (s.top_k) o.top_k(*s.top_k);
    return faster_scorecam(model, x, target, o);
  }
  if (name == "ablationcam")
    return ablationcam(model, x, target,
                       AblationCamOptions().layer(s.layer).score(score_or(s, Score::Logit)).memory_budget(budget(s)));
  if (name == "reciprocam") {
    ReciproCamOptions o;
    o.layer(s.layer).score(score_or(s, Score::Probability)).memory_budget(budget(s));
    if (s.gaussian) o.gaussian(*s.gaussian);
    return reciprocam(model, x, target, o);
  }
  method_info(name);  // throws for unknown names
  SALIENT_FAIL("internal: method '", name, "' has no runner");
}

}  // namespace

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> list = {
      {"vanilla", kInput, false, true, "d score / d x (Simonyan et al. 2014)"},
      {"input_x_gradient", kInput, false, true, "x * d score / d x (Shrikumar et al. 2016)"},
      {"integrated_gradients", kInput, false, true, "path integral of gradients from a baseline (Sundararajan et al. 2017)"},
      {"guided_backprop", kInput, false, true, "gradient with ReLUs passing relu(grad) * (y > 0) (Springenberg et al. 2015)"},
      {"deconvnet", kInput, false, true, "gradient with ReLUs passing relu(grad) (Zeiler & Fergus 2014)"},
      {"smoothgrad", kTunnel, false, true, "mean of the base method over noisy copies (Smilkov et al. 2017)"},
      {"smoothgrad_sq", kTunnel, false, true, "mean of the squared base map over noisy copies"},
      {"vargrad", kTunnel, false, true, "variance of the base map over noisy copies (Adebayo et al. 2018)"},
      {"occlusion", kPerturbation, false, true, "score drop when a sliding window is set to a baseline (Zeiler & Fergus 2014)"},
      {"rise", kPerturbation, false, false, "score-weighted mean of random masks (Petsiuk et al. 2018)"},
      {"gradcam", kCamGrad, true, false, "activations weighted by mean gradients (Selvaraju et al. 2017)"},
      {"gradcam_plusplus", kCamGrad, true, false, "Grad-CAM++ weights (Chattopadhay et al. 2018)"},
      {"xgradcam", kCamGrad, true, false, "activation-normalised gradient weights (Fu et al. 2020)"},
      {"hirescam", kCamGrad, true, false, "element-wise gradient * activation (Draelos & Carin 2020)"},
      {"layercam", kCamGrad, true, false, "positive gradients * activations (Jiang et al. 2021)"},
      {"gradcam_elementwise", kCamGrad, true, false, "relu(gradient * activation) summed over channels"},
      {"eigengradcam", kCamGrad, true, false, "first principal component of gradient * activation"},
      {"guided_gradcam", kCamGrad, true, true, "guided backprop times upsampled Grad-CAM (Selvaraju et al. 2017)"},
      {"fullgrad", kCamGrad, false, false, "input-gradient and bias-gradient terms of every layer (Srinivas & Fleuret 2019)"},
      {"eigencam", kCamFree, true, false, "first principal component of the activations (Muhammad & Yeasin 2020)"},
      {"scorecam", kCamFree, true, false, "activation maps weighted by the score of the input they mask (Wang et al. 2020)"},
      {"faster_scorecam", kCamFree, true, false, "Score-CAM on the channels of largest variance (tf-keras-vis)"},
      {"ablationcam", kCamFree, true, false, "score drop when a channel is ablated (Desai & Ramaswamy 2020)"},
      {"reciprocam", kCamFree, true, false, "score of the network's rest on spatially masked activations (Byun & Lee 2022)"},
  };
  return list;
}

const MethodInfo& method_info(const std::string& name) {
  for (const auto& m : methods())
    if (m.name == name) return m;
  SALIENT_FAIL("unknown method '", name, "'; available: ", join(all_names()), " (or all)");
}

const std::vector<std::string>& noise_tunnel_bases() {
  static const std::vector<std::string> bases = {"vanilla",         "input_x_gradient", "integrated_gradients",
                                                 "guided_backprop", "deconvnet",        "occlusion"};
  return bases;
}

void check_settings(const std::vector<std::string>& names, const ExplainSettings& s) {
  SALIENT_CHECK(!names.empty(), "no method given");
  bool tunnel = false, ig = false, occ = false;
  for (const auto& n : names) {
    const MethodInfo& info = method_info(n);
    tunnel = tunnel || info.family == kTunnel;
    ig = ig || n == "integrated_gradients";
    occ = occ || n == "occlusion";
  }
  if (tunnel && !s.base.empty()) {
    const auto& bases = noise_tunnel_bases();
    SALIENT_CHECK(std::find(bases.begin(), bases.end(), s.base) != bases.end(), "unknown base method '", s.base,
                  "' for the noise tunnel; use one of: ", join(bases));
    ig = ig || s.base == "integrated_gradients";
    occ = occ || s.base == "occlusion";
  }
  SALIENT_CHECK(!s.n_steps || *s.n_steps >= 1, "n_steps must be >= 1, got ", s.n_steps.value_or(0));
  SALIENT_CHECK(!s.samples || *s.samples >= 1, "samples must be >= 1, got ", s.samples.value_or(0));
  SALIENT_CHECK(!s.noise_level || *s.noise_level >= 0, "noise_level must be >= 0, got ", s.noise_level.value_or(0));
  SALIENT_CHECK(!s.window || *s.window >= 1, "window must be >= 1, got ", s.window.value_or(0));
  SALIENT_CHECK(!s.stride || *s.stride >= 1, "stride must be >= 1, got ", s.stride.value_or(0));
  SALIENT_CHECK(!s.masks || *s.masks >= 1, "masks must be >= 1, got ", s.masks.value_or(0));
  SALIENT_CHECK(!s.cell || *s.cell >= 0, "cell must be >= 0 (0: automatic), got ", s.cell.value_or(0));
  SALIENT_CHECK(!s.keep || (*s.keep > 0 && *s.keep <= 1), "keep must be in (0, 1], got ", s.keep.value_or(0));
  SALIENT_CHECK(!s.top_k || *s.top_k > 0, "top_k must be > 0, got ", s.top_k.value_or(0));
  SALIENT_CHECK(!s.memory_budget || *s.memory_budget > 0, "memory_budget must be > 0");
  if (ig && s.integration && s.n_steps && *s.n_steps < 2 &&
      (*s.integration == Integration::RiemannTrapezoid || *s.integration == Integration::RiemannTrapezoidCaptum))
    SALIENT_FAIL("the trapezoid rule needs n_steps >= 2");
  if (ig && !s.baseline_tensor.defined() && !s.baseline.empty() && !number(s.baseline))
    baseline_kind_from_string(s.baseline);  // throws for unknown kinds
  if (occ && !s.baseline.empty() && s.baseline != "zero" && !number(s.baseline))
    SALIENT_FAIL("occlusion: baseline must be zero or a number (the value the window is set to), got '", s.baseline,
                 "'");
}

std::map<std::string, Attribution> explain(const Model& model, const at::Tensor& x,
                                           const std::vector<std::string>& names, const Target& target,
                                           const ExplainSettings& settings, ExplainStats* stats) {
  check_settings(names, settings);
  std::vector<std::string> unique;
  for (const auto& n : names)
    if (std::find(unique.begin(), unique.end(), n) == unique.end()) unique.push_back(n);
  std::map<std::string, Attribution> out;
  ExplainStats local;
  std::vector<std::string> shared;
  for (const auto& n : unique)
    if (detail::shares_gradient_pass(n)) shared.push_back(n);
  using clock = std::chrono::steady_clock;
  auto ms_since = [](clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  };
  if (!shared.empty()) {
    auto t0 = clock::now();
    auto pass = detail::gradient_pass(model, x, target, score_or(settings, Score::Logit), shared, settings.layer);
    for (const auto& n : shared) out[n] = detail::from_gradient_pass(pass, n);
    local.forward_samples += pass.forward_samples;
    local.backward_samples += pass.backward_samples;
    local.shared = shared;
    const double ms = ms_since(t0);
    for (const auto& n : shared) local.milliseconds[n] = ms;
  }
  for (const auto& n : unique) {
    if (out.count(n)) continue;
    auto t0 = clock::now();
    out[n] = run_single(model, x, n, target, settings);
    local.milliseconds[n] = ms_since(t0);
    local.forward_samples += out[n].forward_samples;
    local.backward_samples += out[n].backward_samples;
  }
  if (stats) *stats = local;
  return out;
}

Attribution explain(const Model& model, const at::Tensor& x, const std::string& name, const Target& target,
                    const ExplainSettings& settings) {
  check_settings({name}, settings);
  return run_single(model, x, name, target, settings);
}

std::vector<std::string> suitable_methods(const Model& model, const std::vector<int64_t>& input_shape,
                                          const std::string& layer) {
  bool cam = true;
  if (layer.empty()) {
    try {
      model.default_cam_layer(input_shape);
    } catch (const Error&) {
      cam = false;
    }
  } else {
    model.check_layer(layer);
    for (const auto& l : model.layers(input_shape))
      if (l.path == layer) cam = l.shape.size() == 4 && l.shape[2] * l.shape[3] > 1;
  }
  const bool bias = !model.bias_layers().empty();
  std::vector<std::string> out;
  for (const auto& m : methods()) {
    if (!cam && m.layer) continue;
    if (!bias && m.name == "fullgrad") continue;
    out.push_back(m.name);
  }
  return out;
}

}  // namespace salient

#pragma once
// Every method by name, and several methods in one call that share their passes.
//
//   salient::ExplainSettings s;
//   s.layer = "layer4";
//   s.n_steps = 32;
//   auto maps = salient::explain(model, x, {"vanilla", "gradcam", "guided_gradcam"},
//                                salient::Target::predicted(), s);
//   maps.at("gradcam").map;          // [N,1,H,W]; one forward and two backward passes in all
//   auto one = salient::explain(model, x, "integrated_gradients", salient::Target::index(3), s);
//
// Each method's options struct is built from the settings that apply to it; a setting
// left unset keeps the method's own default. The gradient methods asked for together
// (vanilla, input_x_gradient, guided_backprop, fullgrad, guided_gradcam and the gradient
// CAM variants) run one forward, one standard backward and, with a guided method among
// them, one guided backward; the others run on their own.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "salient/attribution.hpp"
#include "salient/integrated_gradients.hpp"
#include "salient/model.hpp"
#include "salient/target.hpp"

namespace salient {

struct MethodInfo {
  std::string name;     // "integrated_gradients"
  std::string family;   // "input gradient", "noise tunnel", "perturbation", "cam gradient", "cam gradient-free"
  bool layer = false;     // uses a layer (--layer)
  bool channels = false;  // map [N,C,H,W] like the input (gradient-like); else [N,1,H,W] (CAM-like)
  std::string summary;  // one line
};
// All methods, in the order `all` runs them.
const std::vector<MethodInfo>& methods();
// Throws salient::Error listing the names when `name` is unknown.
const MethodInfo& method_info(const std::string& name);
// Methods a noise tunnel can wrap (input-space maps).
const std::vector<std::string>& noise_tunnel_bases();

// Settings by CLI flag name (--n-steps -> n_steps); unset: the method's default.
struct ExplainSettings {
  std::string layer;             // CAM methods; empty: Model::default_cam_layer
  std::optional<Score> score;    // default: logit (probability for rise and reciprocam)
  std::optional<int64_t> n_steps;                // integrated_gradients
  std::optional<Integration> integration;        // integrated_gradients
  std::string baseline;          // integrated_gradients: zero | blur | noise; occlusion: zero or a number
  at::Tensor baseline_tensor;    // integrated_gradients: explicit x' (wins over `baseline`)
  std::optional<int64_t> samples;                // noise tunnel
  std::optional<double> noise_level;             // noise tunnel
  std::string base;              // noise tunnel's base method; empty: vanilla
  std::optional<int64_t> window, stride;         // occlusion
  std::optional<int64_t> masks, cell;            // rise
  std::optional<double> keep;                    // rise
  std::optional<double> top_k;                   // faster_scorecam
  std::optional<bool> gaussian;                  // reciprocam
  std::optional<uint64_t> seed;                  // rise, noise tunnel, noise baseline
  std::optional<int64_t> memory_budget;          // bytes
  std::optional<Precision> precision;            // occlusion, rise, scorecam, faster_scorecam (default float32)
};

// Checks settings against the methods before anything runs (unknown names, unknown
// base, n_steps < 1, ...); explain() calls it too.
void check_settings(const std::vector<std::string>& names, const ExplainSettings& settings);

// Passes one call ran, summed over its methods (shared passes counted once).
struct ExplainStats {
  int64_t forward_samples = 0;
  int64_t backward_samples = 0;
  std::vector<std::string> shared;             // methods served by the one shared gradient pass
  std::map<std::string, double> milliseconds;  // per method; the shared ones all show the shared pass's time
};

std::map<std::string, Attribution> explain(const Model& model, const at::Tensor& x,
                                           const std::vector<std::string>& names,
                                           const Target& target = Target::predicted(),
                                           const ExplainSettings& settings = {}, ExplainStats* stats = nullptr);
Attribution explain(const Model& model, const at::Tensor& x, const std::string& name,
                    const Target& target = Target::predicted(), const ExplainSettings& settings = {});

// The methods that suit a model for inputs of shape [C, H, W]: all of them, minus the
// CAM family when no layer has a 4-D output of spatial size > 1 (or `layer` is not 4-D),
// minus FullGrad when the model has no bias layer.
std::vector<std::string> suitable_methods(const Model& model, const std::vector<int64_t>& input_shape,
                                          const std::string& layer = "");

}  // namespace salient

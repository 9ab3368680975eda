#pragma once
// Internal: the one forward and (at most) two backward passes that every gradient method
// of the vanilla / Grad-CAM / guided / FullGrad family derives its map from, so that
// several of them asked for at once share their passes.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "methods/common.hpp"

namespace salient {
namespace detail {

// Which methods one pass serves. Names are the CLI's: vanilla, input_x_gradient,
// guided_backprop, fullgrad, guided_gradcam and the gradient CAM variants.
bool shares_gradient_pass(const std::string& method);

struct GradientPass {
  at::Tensor x;            // the checked float input
  at::Tensor output;       // model output, detached
  at::Tensor targets;      // [N]
  at::Tensor input_grad;   // d score / d x (standard ReLU backward)
  at::Tensor guided_grad;  // the same with guided ReLU backward
  std::string layer;       // CAM layer
  at::Tensor act, act_grad;  // CAM layer output and its gradient
  std::vector<BiasLayer> bias_layers;
  // FullGrad's bias terms Σ_c normalised |bias_c · d score / d output_c| of the bias layers,
  // [N,1,h,w] summed per (h, w), filled by gradient hooks during the backward.
  std::map<std::pair<int64_t, int64_t>, at::Tensor> bias_terms;
  int64_t forward_samples = 0, backward_samples = 0;
};

// One forward (Autograd::FromTaps when only layer gradients are needed), one standard
// backward to everything the methods need and, for guided methods, one guided backward
// to the input. `layer` empty: the automatic CAM layer.
GradientPass gradient_pass(const Model& model, const at::Tensor& x, const Target& target, Score score,
                           const std::vector<std::string>& methods, const std::string& layer);

// The map of `method` from a pass that served it.
Attribution from_gradient_pass(const GradientPass& pass, const std::string& method);

}  // namespace detail
}  // namespace salient

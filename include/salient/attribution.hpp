#pragma once
// The result every method returns: raw maps that keep sign and scale.
//
//   salient::Attribution a = salient::gradcam(model, x);
//   a.map      // [N, 1, H, W] for CAM methods, [N, C, H, W] for input-gradient methods
//   a.targets  // [N] class explained per sample
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace salient {

struct Attribution {
  at::Tensor map;        // input space: [N,C,H,W] (gradient methods) or [N,1,H,W] (CAM, upsampled)
  at::Tensor layer_map;  // CAM methods: [N,1,h,w] at layer resolution, after the method's ReLU
  at::Tensor raw;        // CAM methods: [N,1,h,w] before the ReLU
  at::Tensor weights;    // CAM methods: [N,C] channel weights
  at::Tensor output;     // model output [N,K] on the clean input, when the method computed it
  at::Tensor targets;    // [N] int64 class per sample (-1 for score-function targets)
  at::Tensor delta;      // Integrated Gradients: completeness error per sample [N]
  std::string layer;     // CAM methods: the module path used
  int64_t forward_samples = 0;   // samples pushed through a forward pass
  int64_t backward_samples = 0;  // samples pushed through a backward pass
};

}  // namespace salient

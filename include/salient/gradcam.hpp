#pragma once
// Grad-CAM (Selvaraju et al. 2017): ReLU(sum_c mean_hw(d score / d A_c) * A_c) at a
// layer's resolution, upsampled to the input (bilinear, align_corners = false).
//
//   auto a = salient::gradcam(model, x, salient::Target::predicted(),
//                             salient::GradCamOptions().layer("layer4"));
//   a.layer_map  // [N,1,h,w]   a.map  // [N,1,H,W]   a.raw  // before ReLU
//
// Cost: one forward that records autograd only after the layer, and one backward from
// the score to the layer (no input gradient, no weight gradients).
#include <string>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

struct GradCamOptions {
  SALIENT_ARG(std::string, layer) = "";  // empty: Model::default_cam_layer
  SALIENT_ARG(Score, score) = Score::Logit;
};

Attribution gradcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                    const GradCamOptions& options = {});

}  // namespace salient

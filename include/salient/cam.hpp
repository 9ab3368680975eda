#pragma once
// The CAM family: class activation maps from a layer's activations A [N,C,h,w] and,
// for the gradient-based variants, the gradient G of the score with respect to A.
//
//   auto a = salient::gradcam(model, x, salient::Target::predicted(),
//                             salient::GradCamOptions().layer("layer4"));
//   a.layer_map  // [N,1,h,w] after ReLU   a.raw  // before ReLU   a.map  // [N,1,H,W]
//   auto b = salient::xgradcam(model, x);      // layer chosen automatically
//
// Every variant shares one core: one forward that records autograd only after the
// layer (its output becomes a graph leaf), one backward from the score to the layer
// when the variant needs gradients (none for Eigen-CAM), then a small function that
// turns A and G into the raw map; ReLU; bilinear upsampling (align_corners = false).
// Formulas, costs and citations: docs/methods.md.
#include <string>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

struct CamOptions {
  SALIENT_ARG(std::string, layer) = "";  // empty: Model::default_cam_layer
  SALIENT_ARG(Score, score) = Score::Logit;
};
using GradCamOptions = CamOptions;
using GradCamPlusPlusOptions = CamOptions;
using XGradCamOptions = CamOptions;
using HiResCamOptions = CamOptions;
using LayerCamOptions = CamOptions;
using GradCamElementwiseOptions = CamOptions;
using EigenCamOptions = CamOptions;
using EigenGradCamOptions = CamOptions;
using GuidedGradCamOptions = CamOptions;

// Grad-CAM (Selvaraju et al. 2017): w_c = mean_hw G_c; raw = sum_c w_c A_c.
Attribution gradcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                    const GradCamOptions& options = {});
// Grad-CAM++ (Chattopadhay et al. 2018), pytorch-grad-cam's form with plain logit
// gradients: alpha = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6) (0 where G = 0);
// w_c = sum_hw relu(G) alpha.
Attribution gradcam_plusplus(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                             const GradCamPlusPlusOptions& options = {});
// XGrad-CAM (Fu et al. 2020): w_c = sum_hw G_c A_c / (sum_hw A_c + 1e-7).
Attribution xgradcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const XGradCamOptions& options = {});
// HiResCAM (Draelos & Carin 2020): raw = sum_c G_c * A_c (no spatial averaging).
Attribution hirescam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const HiResCamOptions& options = {});
// LayerCAM (Jiang et al. 2021): raw = sum_c relu(G_c) * A_c.
Attribution layercam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const LayerCamOptions& options = {});
// Element-wise Grad-CAM (pytorch-grad-cam): raw = sum_c relu(G_c * A_c).
Attribution gradcam_elementwise(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                                const GradCamElementwiseOptions& options = {});
// Eigen-CAM (Muhammad & Yeasin 2020): the projection of the centred activations
// [hw, C] on their first right singular vector. Gradient-free. The SVD's sign is
// arbitrary; salient picks the sign that makes the map correlate positively with the
// mean activation over channels.
Attribution eigencam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const EigenCamOptions& options = {});
// Eigen-Grad-CAM (pytorch-grad-cam): Eigen-CAM's projection of G * A; same sign rule
// with the mean of G * A.
Attribution eigengradcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                         const EigenGradCamOptions& options = {});

// Score-CAM (Wang et al. 2020), as pytorch-grad-cam: each channel's map, upsampled to
// the input (bilinear, align_corners = true) and min-max normalised (eps 1e-8), masks
// the input; w = softmax over channels of the target's score on the masked inputs;
// raw = sum_c w_c A_c. Forward-only: C forwards per sample, in memory-budgeted batches,
// on the frozen inference graph unless optimized(false). Score-CAM cannot skip the
// layers before its layer: its masks act on the input.
struct ScoreCamOptions {
  SALIENT_ARG(std::string, layer) = "";
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
Attribution scorecam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const ScoreCamOptions& options = {});

// Faster Score-CAM (tf-keras-vis's max_N): Score-CAM on the top_k channels of largest
// activation variance, per sample; the other channels get weight 0. top_k < 1 is a
// fraction of the channels (default 10%), >= 1 a count.
struct FasterScoreCamOptions {
  SALIENT_ARG(std::string, layer) = "";
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(double, top_k) = 0.1;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
Attribution faster_scorecam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                            const FasterScoreCamOptions& options = {});

// Ablation-CAM (Desai & Ramaswamy 2020), as pytorch-grad-cam: channel c of the layer's
// output is set to 0 (or to min(A) - 1e7 when the activations are not >= 0 with minimum 0)
// and the rest of the network re-run; w_c = (s - s_c) / s with s the score (pytorch-grad-
// cam divides by the raw logit, so w flips sign where s < 0); raw = sum_c w_c A_c.
// Forward-only: one forward to the layer, then C runs of only the layers after it.
struct AblationCamOptions {
  SALIENT_ARG(std::string, layer) = "";
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
};
Attribution ablationcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                        const AblationCamOptions& options = {});

// ReciproCAM (Byun & Lee 2022), as OpenVINO XAI: for every position (i, j) of the layer's
// h x w output, the rest of the network runs on the activations with all other positions
// zeroed (or, with `gaussian`, weighted by a 3x3 Gaussian around (i, j)); raw[i, j] is
// the target's score (the class probability by default, as the paper). Gradient-free:
// one forward to the layer, then h*w runs of only the layers after it.
struct ReciproCamOptions {
  SALIENT_ARG(std::string, layer) = "";
  SALIENT_ARG(Score, score) = Score::Probability;
  SALIENT_ARG(bool, gaussian) = false;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
};
Attribution reciprocam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                       const ReciproCamOptions& options = {});

// FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam: the input term |x * dS/dx|
// plus, for every bias layer (Model::bias_layers: Conv2d with a bias, BatchNorm2d), the
// term |b_c * dS/dOut_c|; each term is min-max normalised per sample and channel (eps
// 1e-7), upsampled bilinearly (align_corners = false) and summed over channels and terms.
// map: [N,1,H,W], non-negative; pytorch-grad-cam's output is its per-image min-max
// (render::pytorch_grad_cam_scale). No layer option: every bias layer takes part.
// Cost: one forward and one backward to the input.
struct FullGradOptions {
  SALIENT_ARG(Score, score) = Score::Logit;
};
Attribution fullgrad(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                     const FullGradOptions& options = {});

// Guided Grad-CAM (Selvaraju et al. 2017), as Captum's GuidedGradCam: guided backprop
// times the Grad-CAM map after ReLU upsampled by nearest neighbour, broadcast over the
// input channels. map: [N,C,H,W]; layer_map, raw and weights are Grad-CAM's. Cost: one
// forward and two backward passes (the plain one to the layer, the guided one to the
// input), where running the two methods would take two forwards.
Attribution guided_gradcam(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                           const GuidedGradCamOptions& options = {});

}  // namespace salient

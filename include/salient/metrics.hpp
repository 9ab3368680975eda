#pragma once
// Numbers that tell a faithful map from a pretty one. Definitions and citations:
// docs/metrics.md.
//
//   auto a = salient::gradcam(model, x);                       // x [N,C,H,W]
//   auto del = salient::deletion(model, x, a.map, salient::Target::per_sample(...));
//   del.auc            // [N], lower is better: the score falls fast when the top pixels go
//   auto ins = salient::insertion(model, x, a.map, target);   // higher is better
//   bool hit = salient::pointing_hit(a.map[0], {x0, y0, x1, y1});
//   double e = salient::energy_in_box(a.map[0], {x0, y0, x1, y1});
//
// Maps may be [N,1,H,W] or [N,C,H,W] (channels reduced as `reduce` says) at the input's
// resolution. Perturbation curves run forward-only in batches, on the frozen inference
// graph by default.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

// Per-pixel saliency from a map's channels.
enum class ChannelReduce {
  MaxAbs,  // max |m_c| (how gradient maps are drawn; default)
  Sum,     // Σ m_c (signed evidence, e.g. Integrated Gradients)
  AbsSum,  // Σ |m_c|
};
ChannelReduce channel_reduce_from_string(const std::string& s);  // max-abs | sum | abs-sum
// [N,C,H,W] or [N,1,H,W] (or [C,H,W]) -> [N,H,W].
at::Tensor pixel_saliency(const at::Tensor& map, ChannelReduce reduce = ChannelReduce::MaxAbs);

// What replaces a deleted pixel.
enum class Substrate {
  Zero,  // 0 in the model's (normalised) input space (default)
  Blur,  // the Gaussian-blurred image (kernel 11, sigma 5)
  Mean,  // the image's per-channel mean
};
Substrate substrate_from_string(const std::string& s);  // zero | blur | mean

struct PerturbationCurveOptions {
  SALIENT_ARG(double, step_fraction) = 0.01;  // pixels changed per step, as a fraction of H*W
  SALIENT_ARG(int64_t, step_pixels) = 0;      // > 0: pixels per step (RISE used 224 at 224x224)
  SALIENT_ARG(Substrate, substrate) = Substrate::Zero;  // deletion only
  SALIENT_ARG(ChannelReduce, reduce) = ChannelReduce::MaxAbs;
  SALIENT_ARG(Score, score) = Score::Probability;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;  // frozen, inference-optimised graph
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};

struct Curve {
  at::Tensor fraction;  // [S+1] share of pixels changed, 0 ... 1
  at::Tensor scores;    // [N, S+1] score of the target after each step
  at::Tensor auc;       // [N] trapezoid area under scores over fraction
  at::Tensor targets;   // [N] class per sample
  int64_t forward_samples = 0;
};

// Deletion (Petsiuk et al. 2018): pixels, most salient first (ties in raster order), are
// replaced by the substrate over all channels; lower AUC = more faithful.
Curve deletion(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target = Target::predicted(),
               const PerturbationCurveOptions& options = {});
// Insertion: the same pixels are revealed, most salient first, on a blurred copy of the
// image (kernel 11, sigma 5); higher AUC = more faithful.
Curve insertion(const Model& model, const at::Tensor& x, const at::Tensor& map,
                const Target& target = Target::predicted(), const PerturbationCurveOptions& options = {});

// ROAD (Rong et al. 2022, RemOve And Debias): at each fraction f the f*H*W most (MoRF)
// or least (LeRF) salient pixels (raster order on ties) are removed and filled by noisy
// linear imputation, then the target is scored forward-only. Imputation keeps the
// removal from leaking the mask's shape, which plain deletion does. MoRF: lower is
// better; LeRF: higher is better; combined = (mean LeRF - mean MoRF) / 2, which is
// pytorch-grad-cam's ROADCombined (its per-fraction values are differences from the
// unperturbed score, and its MoRF "percentile p" removes the top 100 - p %).
struct RoadOptions {
  SALIENT_ARG(std::vector<double>, fractions) = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  SALIENT_ARG(double, noise) = 0.01;  // std of the Gaussian noise added to imputed values
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(ChannelReduce, reduce) = ChannelReduce::MaxAbs;
  SALIENT_ARG(Score, score) = Score::Probability;
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(bool, optimized) = true;
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
struct RoadResult {
  at::Tensor fraction;             // [K]
  at::Tensor morf, lerf;           // [N, K] scores with the most / least salient pixels removed
  at::Tensor morf_mean, lerf_mean;  // [N] means over the fractions
  at::Tensor combined;             // [N] (lerf_mean - morf_mean) / 2, higher is better
  at::Tensor targets;              // [N]
  int64_t forward_samples = 0;
};
RoadResult road(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target = Target::predicted(),
                const RoadOptions& options = {});
// Rong et al.'s noisy linear imputation of x [N,C,H,W] where removed [N,H,W] is non-zero:
// each removed pixel becomes the weighted mean of its 8 neighbours (1/6 edge, 1/12
// corner; a sparse linear system solved per channel by multigrid-preconditioned conjugate
// gradients to a relative residual of 1e-5), plus N(0, noise^2).
at::Tensor noisy_linear_imputation(const at::Tensor& x, const at::Tensor& removed, double noise = 0.01,
                                   uint64_t seed = 0);

// A box in pixels of the model input, inclusive: x0 <= x <= x1, y0 <= y <= y1.
using Box = std::array<int64_t, 4>;

// Pointing game (Zhang et al. 2016): is the map's maximum within `tolerance` pixels of the
// box? tolerance < 0 means 15 px scaled to the map's size (15 * sqrt(H*W) / 224). A
// constant map has no maximum to point with and counts as a miss. One sample's map:
// [C,H,W] or [H,W]; `mask` variants take a [H,W] mask (non-zero = object).
bool pointing_hit(const at::Tensor& map, const Box& box, double tolerance = -1,
                  ChannelReduce reduce = ChannelReduce::MaxAbs);
bool pointing_hit_mask(const at::Tensor& map, const at::Tensor& mask, double tolerance = -1,
                       ChannelReduce reduce = ChannelReduce::MaxAbs);
// Energy-based pointing game (Wang et al. 2020, Score-CAM): share of the map's
// non-negative part inside the box; 0 for a map with no positive value.
double energy_in_box(const at::Tensor& map, const Box& box, ChannelReduce reduce = ChannelReduce::MaxAbs);
double energy_in_mask(const at::Tensor& map, const at::Tensor& mask, ChannelReduce reduce = ChannelReduce::MaxAbs);

// Spearman rank correlation of two maps' values (ties get their mean rank); 0 when either
// is constant.
double spearman(const at::Tensor& a, const at::Tensor& b);
// SSIM (Wang et al. 2004) of two [H,W] maps, each min-max normalised to [0,1] first
// (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1).
double ssim(const at::Tensor& a, const at::Tensor& b);

// Infidelity (Yeh et al. 2019), as Captum's `infidelity`: for perturbations I ~ N(0, σ²)
// of the input, E_I[(Σ I·attr − (F(x) − F(x − I)))²] over n_perturb draws, F the target's
// score (raw logit by default, as Captum's forward output). With `normalize`, attr is first
// scaled by β = E[Σ I·attr · ΔF] / E[(Σ I·attr)²], the least-squares optimum (Captum's
// normalize=True), which makes the value independent of the map's scale. A map [N,1,H,W]
// applies to every channel. Lower is better. Cost: 1 + n_perturb forwards per sample, in
// one batch, on the frozen inference graph unless optimized(false).
struct InfidelityOptions {
  SALIENT_ARG(int64_t, n_perturb) = 10;
  SALIENT_ARG(double, noise_std) = 0.003;  // Captum's documented example perturbation
  SALIENT_ARG(bool, normalize) = false;
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(Score, score) = Score::Logit;
  SALIENT_ARG(bool, optimized) = true;  // frozen, inference-optimised graph
  SALIENT_ARG(Precision, precision) = Precision::Float32;  // of the frozen copy: Model::infer
};
at::Tensor infidelity(const Model& model, const at::Tensor& x, const at::Tensor& map,
                      const Target& target = Target::predicted(), const InfidelityOptions& options = {});

using ExplainFn = std::function<Attribution(const Model& model, const at::Tensor& x, const Target& target)>;

// Max-sensitivity (Yeh et al. 2019), as Captum's `sensitivity_max`: the largest, over
// n_perturb draws of uniform noise in [−radius, radius], of ‖e(x + δ) − e(x)‖ / ‖e(x)‖
// (Frobenius norms per sample; Captum divides by the norm of the unperturbed
// explanation). The target class is fixed on x. Lower is better; 0 when e(x) is all zero.
// Cost: 1 + n_perturb explanations per sample, perturbations_per_batch copies per call.
struct SensitivityOptions {
  SALIENT_ARG(int64_t, n_perturb) = 10;
  SALIENT_ARG(double, radius) = 0.02;
  SALIENT_ARG(uint64_t, seed) = 0;
  // Perturbed copies explained per call, as one batch (Captum's max_examples_per_batch).
  SALIENT_ARG(int64_t, perturbations_per_batch) = 10;
};
at::Tensor max_sensitivity(const Model& model, const at::Tensor& x, const ExplainFn& explain,
                           const Target& target = Target::predicted(), const SensitivityOptions& options = {});

// Sanity check by cascading model-parameter randomisation (Adebayo et al. 2018): the
// blocks of Model::parameter_blocks are re-drawn one by one from the output downwards on
// copies of the model, and after each step every sample's map is compared with the
// original model's map for the same class: Spearman rank correlation of the maps'
// magnitudes (max-abs over channels) and of their signed values (sum over channels), and
// SSIM of the magnitudes. A method that explains the model decorrelates; one that mostly
// reflects the image (guided backprop, known result) stays similar.
struct SanityOptions {
  SALIENT_ARG(uint64_t, seed) = 0;
  SALIENT_ARG(size_t, min_blocks) = 4;  // passed to Model::parameter_blocks
};
struct SanityCurve {
  std::vector<std::string> blocks;  // randomised after step s: blocks[0..s]
  at::Tensor spearman_abs;          // [S, N]
  at::Tensor spearman;              // [S, N] signed
  at::Tensor ssim;                  // [S, N]
};
SanityCurve cascading_randomization(const Model& model, const at::Tensor& x, const ExplainFn& explain,
                                    const Target& target = Target::predicted(), const SanityOptions& options = {});

}  // namespace salient

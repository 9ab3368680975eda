#pragma once
// Integrated Gradients (Sundararajan et al. 2017):
//   attr = (x - x') * ∫_0^1 d score(x' + a (x - x')) / dx da,
// the integral approximated with n_steps points. `delta` is the completeness error
// sum(attr) - (F(x) - F(x')) per sample, as Captum's convergence delta.
//
//   auto a = salient::integrated_gradients(model, x, salient::Target::index(3),
//       salient::IntegratedGradientsOptions().n_steps(64).baseline_kind(salient::BaselineKind::Blur));
//   a.map  // [N,C,H,W]   a.delta  // [N]
//
// Cost: n_steps forwards and backwards to the input per sample (run in chunks sized
// from memory_budget), plus 2 forwards without graph for the delta.
#include <vector>

#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

enum class Integration {
  RiemannLeft,
  RiemannRight,
  RiemannMiddle,
  RiemannTrapezoid,         // textbook: n points from 0 to 1, weights 1/(n-1), ends halved
  RiemannTrapezoidCaptum,   // Captum's: the same points, weights 1/n, ends halved (sum (n-1)/n)
  GaussLegendre,            // Captum's default
};
Integration integration_from_string(const std::string& s);  // riemann_left, ..., gausslegendre
const char* to_string(Integration i);

// Points a_k in [0, 1] and weights w_k of a rule with n points: ∫ f ≈ Σ w_k f(a_k).
struct Quadrature {
  std::vector<double> alphas, weights;
};
Quadrature quadrature(Integration method, int64_t n);

enum class BaselineKind { Zero, Blur, Noise };
BaselineKind baseline_kind_from_string(const std::string& s);  // zero | blur | noise

struct IntegratedGradientsOptions {
  SALIENT_ARG(int64_t, n_steps) = 50;
  SALIENT_ARG(Integration, integration) = Integration::GaussLegendre;
  SALIENT_ARG(BaselineKind, baseline_kind) = BaselineKind::Zero;
  SALIENT_ARG(at::Tensor, baseline) = {};  // explicit x' ([N,C,H,W] or [C,H,W]); wins over baseline_kind
  SALIENT_ARG(double, blur_sigma) = 5.0;   // Blur: Gaussian blur of x, kernel 11
  SALIENT_ARG(uint64_t, seed) = 0;         // Noise: uniform in [min x, max x] per sample, one draw for the batch
  SALIENT_ARG(int64_t, memory_budget) = int64_t(1) << 30;
  SALIENT_ARG(Score, score) = Score::Logit;
};

Attribution integrated_gradients(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                                 const IntegratedGradientsOptions& options = {});

// The baseline x' the options describe, for a batch x.
at::Tensor make_baseline(const at::Tensor& x, const IntegratedGradientsOptions& options);

// Depthwise Gaussian blur of [N,C,H,W] with reflect padding (kernel odd).
at::Tensor gaussian_blur(const at::Tensor& x, int64_t kernel, double sigma);

}  // namespace salient

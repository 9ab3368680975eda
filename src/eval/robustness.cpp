#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <vector>

#include "methods/common.hpp"
#include "salient/metrics.hpp"

namespace salient {

at::Tensor infidelity(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
                      const InfidelityOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "infidelity");
  const int64_t n = xf.size(0), k = o.n_perturb();
  SALIENT_CHECK(k >= 1, "infidelity: n_perturb must be >= 1, got ", k);
  SALIENT_CHECK(o.noise_std() > 0, "infidelity: noise_std must be > 0, got ", o.noise_std());
  const auto inference = detail::inference("infidelity", o.optimized(), o.precision());
  SALIENT_CHECK(map.defined() && map.dim() == 4 && map.size(0) == n && (map.size(1) == 1 || map.size(1) == xf.size(1)) &&
                    map.size(2) == xf.size(2) && map.size(3) == xf.size(3),
                "infidelity: map ", map.defined() ? detail::shape_str(map.sizes()) : std::string("undefined"),
                " does not fit the input ", detail::shape_str(xf.sizes()));
  // A NaN anywhere in the map would make every score NaN without a word.
  detail::check_finite(map, "infidelity", "the map");
  at::Tensor attr = map.detach().to(xf.device(), at::kDouble).expand_as(xf);
  at::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  // One forward (on the frozen graph by default) for the clean rows and every
  // perturbation, perturbation-major after them: row N + j * N + b.
  at::Tensor noise = detail::seeded_randn({k, n, xf.size(1), xf.size(2), xf.size(3)}, gen, xf) * o.noise_std();
  at::Tensor rows = at::cat({xf, (xf.unsqueeze(0) - noise).reshape({k * n, xf.size(1), xf.size(2), xf.size(3)})});
  at::Tensor out = inference.run(model, rows);
  model.release_buffers();  // one batch: nothing reuses them
  at::Tensor clean_out = out.narrow(0, 0, n), perturbed_out = out.narrow(0, n, k * n);
  // The target is fixed on the clean input.
  const Target t = target.is_predicted() ? Target::per_sample(detail::to_vector(target.resolve(clean_out))) : target;
  const Target tk = t.select(at::arange(n, at::kLong).repeat({k}), n);
  at::Tensor clean = t.scores(clean_out, t.resolve(clean_out), o.score()).to(at::kDouble);  // [N]
  at::Tensor perturbed = tk.scores(perturbed_out, tk.resolve(perturbed_out), o.score()).to(at::kDouble).view({k, n});
  at::Tensor df = clean.unsqueeze(0) - perturbed;                               // [k, N]
  at::Tensor ia = (noise.to(at::kDouble) * attr.unsqueeze(0)).flatten(2).sum(2);  // [k, N]
  if (o.normalize()) {
    at::Tensor den = (ia * ia).mean(0);
    at::Tensor beta = at::where(den > 0, (ia * df).mean(0) / den, at::zeros_like(den));
    ia = ia * beta.unsqueeze(0);
  }
  return (ia - df).pow(2).mean(0);
}

at::Tensor max_sensitivity(const Model& model, const at::Tensor& x, const ExplainFn& explain, const Target& target,
                           const SensitivityOptions& o) {
  SALIENT_CHECK(explain != nullptr, "max_sensitivity: no method given");
  at::Tensor xf = detail::checked_input(model, x, "max_sensitivity");
  SALIENT_CHECK(o.n_perturb() >= 1, "max_sensitivity: n_perturb must be >= 1, got ", o.n_perturb());
  SALIENT_CHECK(o.radius() > 0, "max_sensitivity: radius must be > 0, got ", o.radius());
  SALIENT_CHECK(o.perturbations_per_batch() >= 1, "max_sensitivity: perturbations_per_batch must be >= 1, got ",
                o.perturbations_per_batch());
  const int64_t n = xf.size(0);
  Target t = detail::fixed_target(model, xf, target);
  at::Tensor e0 = explain(model, xf, t).map.detach().to(at::kDouble).reshape({n, -1});
  detail::check_finite(e0, "max_sensitivity", "the explanation of the input");
  at::Tensor norm0 = e0.norm(2, {1});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  at::Tensor best = at::zeros({n}, e0.options());
  const int64_t k = o.n_perturb(), per = o.perturbations_per_batch();
  for (int64_t j0 = 0; j0 < k; j0 += per) {
    // Perturbation-major rows j * N + b, explained in one call.
    const int64_t j1 = std::min(k, j0 + per);
    std::vector<at::Tensor> rows;
    for (int64_t j = j0; j < j1; ++j) rows.push_back(xf + (detail::seeded_rand(xf.sizes(), gen, xf) * 2 - 1) * o.radius());
    const Target tj = t.select(at::arange(n, at::kLong).repeat({j1 - j0}), n);
    at::Tensor e = explain(model, at::cat(rows), tj).map.detach().to(at::kDouble).reshape({j1 - j0, n, -1});
    detail::check_finite(e, "max_sensitivity", "the explanation of a perturbed input");
    best = at::maximum(best, std::get<0>((e - e0.unsqueeze(0)).norm(2, {2}).max(0)));
  }
  return at::where(norm0 > 0, best / norm0, at::zeros_like(best));
}

}  // namespace salient

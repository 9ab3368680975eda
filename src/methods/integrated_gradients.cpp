#include "salient/integrated_gradients.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "methods/common.hpp"
#include "salient/smoothgrad.hpp"

namespace salient {

Integration integration_from_string(const std::string& s) {
  if (s == "riemann_left") return Integration::RiemannLeft;
  if (s == "riemann_right") return Integration::RiemannRight;
  if (s == "riemann_middle") return Integration::RiemannMiddle;
  if (s == "riemann_trapezoid") return Integration::RiemannTrapezoid;
  if (s == "riemann_trapezoid_captum") return Integration::RiemannTrapezoidCaptum;
  if (s == "gausslegendre") return Integration::GaussLegendre;
  SALIENT_FAIL("unknown integration '", s,
               "': use riemann_left, riemann_right, riemann_middle, riemann_trapezoid, riemann_trapezoid_captum or "
               "gausslegendre");
}

const char* to_string(Integration i) {
  switch (i) {
    case Integration::RiemannLeft: return "riemann_left";
    case Integration::RiemannRight: return "riemann_right";
    case Integration::RiemannMiddle: return "riemann_middle";
    case Integration::RiemannTrapezoid: return "riemann_trapezoid";
    case Integration::RiemannTrapezoidCaptum: return "riemann_trapezoid_captum";
    case Integration::GaussLegendre: return "gausslegendre";
  }
  return "";
}

BaselineKind baseline_kind_from_string(const std::string& s) {
  if (s == "zero") return BaselineKind::Zero;
  if (s == "blur") return BaselineKind::Blur;
  if (s == "noise") return BaselineKind::Noise;
  SALIENT_FAIL("unknown baseline '", s, "': use zero, blur, noise or a .npy file");
}

namespace {

// float32 points, as torch.linspace gives them to Captum.
std::vector<double> linspace32(double a, double b, int64_t n) {
  at::Tensor t = at::linspace(a, b, n, at::TensorOptions().dtype(at::kFloat)).to(at::kDouble).contiguous();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + n);
}

// Nodes and weights of n-point Gauss-Legendre on [-1, 1] (Newton on P_n; as numpy's
// leggauss to ~1e-16), ascending.
void gauss_legendre(int64_t n, std::vector<double>* x, std::vector<double>* w) {
  x->assign(n, 0.0);
  w->assign(n, 0.0);
  const double pi = std::acos(-1.0);
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    double z = std::cos(pi * (i + 0.75) / (n + 0.5)), pp = 1.0;
    for (int iter = 0; iter < 100; ++iter) {
      double p1 = 1.0, p2 = 0.0;
      for (int64_t j = 1; j <= n; ++j) {
        double p3 = p2;
        p2 = p1;
        p1 = ((2.0 * j - 1.0) * z * p2 - (j - 1.0) * p3) / j;
      }
      pp = n * (z * p1 - p2) / (z * z - 1.0);
      double z1 = z;
      z = z1 - p1 / pp;
      if (std::abs(z - z1) < 1e-16) break;
    }
    (*x)[i] = -z;
    (*x)[n - 1 - i] = z;
    (*w)[i] = (*w)[n - 1 - i] = 2.0 / ((1.0 - z * z) * pp * pp);
  }
  if (n % 2 == 1) (*x)[n / 2] = 0.0;
}

}  // namespace

Quadrature quadrature(Integration method, int64_t n) {
  SALIENT_CHECK(n >= 1, "integrated_gradients: n_steps must be >= 1, got ", n);
  Quadrature q;
  switch (method) {
    case Integration::RiemannLeft:
      q.alphas = linspace32(0.0, 1.0 - 1.0 / n, n);
      break;
    case Integration::RiemannRight:
      q.alphas = linspace32(1.0 / n, 1.0, n);
      break;
    case Integration::RiemannMiddle:
      q.alphas = linspace32(1.0 / (2.0 * n), 1.0 - 1.0 / (2.0 * n), n);
      break;
    case Integration::RiemannTrapezoid:
    case Integration::RiemannTrapezoidCaptum:
      SALIENT_CHECK(n >= 2, "integrated_gradients: the trapezoid rule needs n_steps >= 2, got ", n);
      q.alphas = linspace32(0.0, 1.0, n);
      break;
    case Integration::GaussLegendre: {
      std::vector<double> x, w;
      gauss_legendre(n, &x, &w);
      for (int64_t i = 0; i < n; ++i) {
        q.alphas.push_back(0.5 * (1.0 + x[i]));
        q.weights.push_back(0.5 * w[i]);
      }
      return q;
    }
  }
  double step = method == Integration::RiemannTrapezoid ? 1.0 / (n - 1) : 1.0 / n;
  q.weights.assign(n, step);
  if (method == Integration::RiemannTrapezoid || method == Integration::RiemannTrapezoidCaptum)
    q.weights.front() /= 2, q.weights.back() /= 2;
  return q;
}

at::Tensor gaussian_blur(const at::Tensor& x, int64_t kernel, double sigma) {
  SALIENT_CHECK(kernel >= 1 && kernel % 2 == 1, "gaussian blur: kernel must be odd and >= 1, got ", kernel);
  SALIENT_CHECK(sigma > 0, "gaussian blur: sigma must be > 0, got ", sigma);
  const int64_t c = x.size(1), r = kernel / 2;
  at::Tensor k = at::arange(-r, r + 1, x.options()).pow(2).div(-2.0 * sigma * sigma).exp();
  k = k / k.sum();
  at::Tensor padded = (x.size(2) > r && x.size(3) > r) ? at::reflection_pad2d(x, {r, r, r, r})
                                                        : at::replication_pad2d(x, {r, r, r, r});
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  at::Tensor out = at::conv2d(padded, k.view({1, 1, kernel, 1}).expand({c, 1, kernel, 1}).contiguous(), at::Tensor(),
                              one, zero, one, c);
  return at::conv2d(out, k.view({1, 1, 1, kernel}).expand({c, 1, 1, kernel}).contiguous(), at::Tensor(), one, zero,
                    one, c);
}

at::Tensor make_baseline(const at::Tensor& x, const IntegratedGradientsOptions& o) {
  if (o.baseline().defined()) {
    at::Tensor b = o.baseline().detach().to(x.device(), at::kFloat);
    if (b.dim() == 3) b = b.unsqueeze(0);
    SALIENT_CHECK(b.dim() == 4 && b.sizes().slice(1) == x.sizes().slice(1) && (b.size(0) == 1 || b.size(0) == x.size(0)),
                  "integrated_gradients: baseline of shape ", detail::shape_str(o.baseline().sizes()),
                  " does not fit input ", detail::shape_str(x.sizes()));
    SALIENT_CHECK(detail::all_finite(b), "integrated_gradients: baseline contains non-finite values");
    return b.expand(x.sizes()).contiguous();
  }
  switch (o.baseline_kind()) {
    case BaselineKind::Zero:
      return at::zeros_like(x);
    case BaselineKind::Blur:
      return gaussian_blur(x, 11, o.blur_sigma());
    case BaselineKind::Noise: {
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
      at::Tensor flat = x.flatten(1);
      at::Tensor lo = std::get<0>(flat.min(1)).view({-1, 1, 1, 1}), hi = std::get<0>(flat.max(1)).view({-1, 1, 1, 1});
      // One draw shared by the batch: a sample's baseline does not depend on the others.
      std::vector<int64_t> one = x.sizes().vec();
      one[0] = 1;
      return lo + (hi - lo) * detail::seeded_rand(one, gen, x);
    }
  }
  return {};
}

namespace {

// Steps with alpha below this run the model's own graph (see the chunk loop).
constexpr double kOwnGraphBelowAlpha = 0.1;

}  // namespace

Attribution integrated_gradients(const Model& model, const at::Tensor& x, const Target& target,
                                 const IntegratedGradientsOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "integrated_gradients");
  const int64_t n = o.n_steps(), batch = xf.size(0);
  Quadrature q = quadrature(o.integration(), n);
  SALIENT_CHECK(o.memory_budget() > 0, "integrated_gradients: memory_budget must be > 0");
  at::Tensor base = make_baseline(xf, o);
  at::Tensor diff = xf - base;

  Attribution a;
  // F(x) and F(x') without a graph: the targets, and the delta's endpoints.
  at::Tensor ends = model.forward(at::cat({xf, base})).output;
  a.output = ends.narrow(0, 0, batch);
  a.targets = target.resolve(a.output);
  a.forward_samples = 2 * batch;

  // Rows are step-major (row = k * batch + b), as Captum batches them.
  const int64_t rows = n * batch;
  const int64_t chunk = chunk_rows(model, xf, o.memory_budget());
  at::Tensor alphas = at::tensor(q.alphas, at::TensorOptions().dtype(at::kDouble)).to(xf.device(), at::kFloat);
  at::Tensor weights = at::tensor(q.weights, at::TensorOptions().dtype(at::kDouble)).to(xf.device(), at::kFloat);
  at::Tensor total = at::zeros_like(xf);
  // Steps near the baseline run the model's own graph, the rest Autograd::Input's copy with
  // BatchNorm folded (0.85-0.95 of the own graph's time). Near the baseline the activations
  // are the baseline's own, alike across positions, plus small differences: max-pool and
  // ReLU decisions sit within rounding of a tie there, so a copy that rounds differently
  // flips some of them (on the reference model at alpha 0.0014 and 0.018, none from 0.03
  // on) and Captum parity fails. A chunk holds steps of one kind only.
  auto near_baseline = [&](int64_t row) { return q.alphas[row / batch] < kOwnGraphBelowAlpha; };
  std::vector<int64_t> bounds{0};
  for (int64_t start = 0, end; start < rows; start = end) {  // each run of one kind, evened out
    for (end = start + 1; end < rows && near_baseline(end) == near_baseline(start);) ++end;
    for (int64_t b : detail::even_chunks(end - start, chunk))
      if (b > 0) bounds.push_back(start + b);
  }
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    const int64_t r0 = bounds[i], r1 = bounds[i + 1];
    at::Tensor r = detail::row_range(r0, r1, xf);
    at::Tensor step = r.div(batch, "floor"), example = r.remainder(batch);
    at::Tensor alpha = alphas.index_select(0, step).view({-1, 1, 1, 1});
    at::Tensor leaf = (base.index_select(0, example) + alpha * diff.index_select(0, example)).requires_grad_(true);
    auto fr = model.forward(leaf, {}, near_baseline(r0) ? Autograd::Full : Autograd::Input);
    at::Tensor s = target.scores(fr.output, a.targets.index_select(0, example), o.score());
    at::Tensor g = torch::autograd::grad({s.sum()}, {leaf})[0];
    detail::check_finite(g, "integrated_gradients", "the input gradient");
    total.index_add_(0, example, g * weights.index_select(0, step).view({-1, 1, 1, 1}));
  }
  a.map = total * diff;
  at::Tensor end_scores = target.scores(ends, at::cat({a.targets, a.targets}), o.score());
  a.delta = a.map.flatten(1).sum(1) - (end_scores.narrow(0, 0, batch) - end_scores.narrow(0, batch, batch));
  a.forward_samples += rows;
  a.backward_samples = rows;
  return a;
}

}  // namespace salient

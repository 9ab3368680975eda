#include "salient/metrics.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "eval/rank.hpp"
#include "methods/common.hpp"
#include "salient/integrated_gradients.hpp"

namespace salient {

ChannelReduce channel_reduce_from_string(const std::string& s) {
  if (s == "max-abs") return ChannelReduce::MaxAbs;
  if (s == "sum") return ChannelReduce::Sum;
  if (s == "abs-sum") return ChannelReduce::AbsSum;
  SALIENT_FAIL("unknown channel reduction '", s, "': use max-abs, sum or abs-sum");
}

Substrate substrate_from_string(const std::string& s) {
  if (s == "zero") return Substrate::Zero;
  if (s == "blur") return Substrate::Blur;
  if (s == "mean") return Substrate::Mean;
  SALIENT_FAIL("unknown substrate '", s, "': use zero, blur or mean");
}

at::Tensor pixel_saliency(const at::Tensor& map, ChannelReduce reduce) {
  SALIENT_CHECK(map.defined() && (map.dim() == 3 || map.dim() == 4), "metrics: a map must be [N,C,H,W] or [C,H,W], got ",
                map.defined() ? detail::shape_str(map.sizes()) : std::string("undefined"));
  at::Tensor m = (map.dim() == 3 ? map.unsqueeze(0) : map).detach().to(at::kFloat);
  SALIENT_CHECK(detail::all_finite(m), "metrics: the map contains non-finite values");
  switch (reduce) {
    case ChannelReduce::MaxAbs: return std::get<0>(m.abs().max(1));
    case ChannelReduce::Sum: return m.sum(1);
    case ChannelReduce::AbsSum: return m.abs().sum(1);
  }
  return {};
}

namespace detail {

at::Tensor saliency_rank(const at::Tensor& map, const at::Tensor& x, ChannelReduce reduce, const char* name) {
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), hw = h * w;
  at::Tensor sal = pixel_saliency(map, reduce).to(x.device());  // a map may come from another device
  // One channel (a CAM) or the input's (a gradient): any other count is some other tensor.
  const int64_t channels = map.size(map.dim() - 3);
  SALIENT_CHECK(sal.size(0) == n && sal.size(1) == h && sal.size(2) == w && (channels == 1 || channels == x.size(1)),
                name, ": map ", shape_str(map.sizes()), " does not fit the input ", shape_str(x.sizes()));
  at::Tensor order = std::get<1>(at::sort(sal.reshape({n, hw}), /*stable=*/true, /*dim=*/1, /*descending=*/true));
  at::Tensor rank = at::empty_like(order);
  rank.scatter_(1, order, at::arange(hw, order.options()).expand({n, hw}));
  return rank;
}

}  // namespace detail

namespace {

// One sample's map as [H, W].
at::Tensor map_2d(const at::Tensor& map, ChannelReduce reduce) {
  if (map.defined() && map.dim() == 2) return map.detach().to(at::kFloat);
  SALIENT_CHECK(map.defined() && map.dim() == 3, "metrics: one sample's map must be [C,H,W] or [H,W], got ",
                map.defined() ? detail::shape_str(map.sizes()) : std::string("undefined"));
  return pixel_saliency(map, reduce)[0];
}

void check_box(const Box& b, int64_t h, int64_t w) {
  SALIENT_CHECK(b[0] <= b[2] && b[1] <= b[3] && b[2] >= 0 && b[3] >= 0 && b[0] < w && b[1] < h, "metrics: box [",
                b[0], ", ", b[1], ", ", b[2], ", ", b[3], "] is empty or outside the ", h, "x", w, " map");
}

double default_tolerance(int64_t h, int64_t w, double tolerance) {
  // NaN would fail every comparison and quietly become the default.
  SALIENT_CHECK(!std::isnan(tolerance), "pointing game: tolerance is NaN");
  return tolerance >= 0 ? tolerance : 15.0 * std::sqrt(static_cast<double>(h * w)) / 224.0;
}

// Position of the maximum, or false for a constant map.
bool peak(const at::Tensor& m, int64_t* py, int64_t* px) {
  at::Tensor flat = m.flatten();
  if ((flat.max() - flat.min()).item<double>() <= 0) return false;
  const int64_t i = flat.argmax().item<int64_t>();
  *py = i / m.size(1);
  *px = i % m.size(1);
  return true;
}

Curve perturbation_curve(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
                         const PerturbationCurveOptions& o, bool insert, const char* name) {
  at::Tensor xf = detail::checked_input(model, x, name);
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3), hw = h * w;
  at::Tensor rank = detail::saliency_rank(map, xf, o.reduce(), name);
  SALIENT_CHECK(o.step_pixels() > 0 || (o.step_fraction() > 0 && o.step_fraction() <= 1), name,
                ": step_fraction must be in (0, 1], got ", o.step_fraction());
  SALIENT_CHECK(o.memory_budget() > 0, name, ": memory_budget must be > 0");
  const auto inference = detail::inference(name, o.optimized(), o.precision());
  const int64_t step =
      o.step_pixels() > 0 ? o.step_pixels() : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(o.step_fraction() * hw)));
  const int64_t steps = (hw + step - 1) / step;
  at::Tensor thresholds = (at::arange(steps + 1, rank.options()) * step).clamp_max(hw);  // pixels changed
  at::Tensor start, end;  // row values where a pixel is / is not yet changed
  if (insert) {
    start = gaussian_blur(xf, 11, 5.0);
    end = xf;
  } else {
    start = xf;
    switch (o.substrate()) {
      case Substrate::Zero: end = at::zeros_like(xf); break;
      case Substrate::Blur: end = gaussian_blur(xf, 11, 5.0); break;
      case Substrate::Mean: end = xf.mean({2, 3}, /*keepdim=*/true).expand_as(xf); break;
    }
  }
  Attribution probe;
  const auto classes = detail::sample_classes(model, xf, target, inference, &probe);
  const int64_t per = steps + 1, rows = n * per;
  auto make_rows = [&](int64_t r0, int64_t r1) {
    at::Tensor r = at::arange(r0, r1, rank.options());
    at::Tensor sample = r.div(per, "floor"), k = r.remainder(per);
    at::Tensor changed = (rank.index_select(0, sample) < thresholds.index_select(0, k).unsqueeze(1)).view({-1, 1, h, w});
    return at::where(changed, end.index_select(0, sample), start.index_select(0, sample));
  };
  Curve curve;
  curve.scores =
      detail::batched_scores(model, rows, forward_chunk_rows(model, xf, o.memory_budget()),
                             detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / per; },
                             classes, target, o.score())
          .view({n, per});
  curve.fraction = thresholds.to(at::kFloat) / static_cast<float>(hw);
  at::Tensor df = curve.fraction.slice(0, 1) - curve.fraction.slice(0, 0, steps);
  curve.auc = ((curve.scores.slice(1, 1) + curve.scores.slice(1, 0, steps)) * 0.5 * df).sum(1);
  curve.targets = detail::classes_tensor(classes, n, rank);
  curve.forward_samples = probe.forward_samples + rows;
  return curve;
}

}  // namespace

Curve deletion(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
               const PerturbationCurveOptions& options) {
  return perturbation_curve(model, x, map, target, options, false, "deletion");
}

Curve insertion(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
                const PerturbationCurveOptions& options) {
  return perturbation_curve(model, x, map, target, options, true, "insertion");
}

bool pointing_hit(const at::Tensor& map, const Box& box, double tolerance, ChannelReduce reduce) {
  at::Tensor m = map_2d(map, reduce);
  check_box(box, m.size(0), m.size(1));
  int64_t py = 0, px = 0;
  if (!peak(m, &py, &px)) return false;
  const double dx = static_cast<double>(std::max<int64_t>({box[0] - px, int64_t(0), px - box[2]}));
  const double dy = static_cast<double>(std::max<int64_t>({box[1] - py, int64_t(0), py - box[3]}));
  return std::sqrt(dx * dx + dy * dy) <= default_tolerance(m.size(0), m.size(1), tolerance);
}

bool pointing_hit_mask(const at::Tensor& map, const at::Tensor& mask, double tolerance, ChannelReduce reduce) {
  at::Tensor m = map_2d(map, reduce);
  SALIENT_CHECK(mask.dim() == 2 && mask.size(0) == m.size(0) && mask.size(1) == m.size(1), "metrics: mask ",
                detail::shape_str(mask.sizes()), " does not fit the ", m.size(0), "x", m.size(1), " map");
  at::Tensor where = at::nonzero(mask);  // [K, 2]
  SALIENT_CHECK(where.size(0) > 0, "metrics: the mask is empty");
  int64_t py = 0, px = 0;
  if (!peak(m, &py, &px)) return false;
  at::Tensor d = where.to(at::kCPU, at::kDouble) - at::tensor({static_cast<double>(py), static_cast<double>(px)}, at::kDouble);
  const double nearest = d.pow(2).sum(1).min().sqrt().item<double>();
  return nearest <= default_tolerance(m.size(0), m.size(1), tolerance);
}

double energy_in_box(const at::Tensor& map, const Box& box, ChannelReduce reduce) {
  at::Tensor m = at::relu(map_2d(map, reduce)).to(at::kDouble);
  check_box(box, m.size(0), m.size(1));
  const double total = m.sum().item<double>();
  if (total <= 0) return 0.0;
  const int64_t x0 = std::max<int64_t>(0, box[0]), y0 = std::max<int64_t>(0, box[1]);
  const int64_t x1 = std::min<int64_t>(m.size(1) - 1, box[2]), y1 = std::min<int64_t>(m.size(0) - 1, box[3]);
  return m.slice(0, y0, y1 + 1).slice(1, x0, x1 + 1).sum().item<double>() / total;
}

double energy_in_mask(const at::Tensor& map, const at::Tensor& mask, ChannelReduce reduce) {
  at::Tensor m = at::relu(map_2d(map, reduce)).to(at::kDouble);
  SALIENT_CHECK(mask.dim() == 2 && mask.size(0) == m.size(0) && mask.size(1) == m.size(1), "metrics: mask ",
                detail::shape_str(mask.sizes()), " does not fit the ", m.size(0), "x", m.size(1), " map");
  const double total = m.sum().item<double>();
  if (total <= 0) return 0.0;
  return (m * (mask != 0).to(m.device(), at::kDouble)).sum().item<double>() / total;
}

namespace detail {

std::vector<double> mean_ranks(const at::Tensor& t) {
  at::Tensor v = t.detach().flatten().to(at::kCPU, at::kDouble).contiguous();
  const int64_t n = v.numel();
  const double* p = v.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i)
    SALIENT_CHECK(std::isfinite(p[i]), "spearman: the map has non-finite values (NaN or Inf)");
  // (value, position) pairs sort in contiguous memory; ties get one mean rank anyway.
  std::vector<std::pair<double, int64_t>> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = {p[i], i};
  std::sort(order.begin(), order.end());
  std::vector<double> r(n);
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && order[j + 1].first == order[i].first) ++j;
    const double mean_rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (int64_t k = i; k <= j; ++k) r[order[k].second] = mean_rank;
    i = j + 1;
  }
  return r;
}

double rank_correlation(const std::vector<double>& ra, const std::vector<double>& rb) {
  SALIENT_CHECK(ra.size() == rb.size() && !ra.empty(), "spearman: the maps differ in size (", ra.size(), " vs ",
                rb.size(), ")");
  const double n = static_cast<double>(ra.size());
  double ma = 0, mb = 0;
  for (size_t i = 0; i < ra.size(); ++i) ma += ra[i], mb += rb[i];
  ma /= n, mb /= n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (saa <= 0 || sbb <= 0) return 0.0;
  return sab / std::sqrt(saa * sbb);
}

}  // namespace detail

double spearman(const at::Tensor& a, const at::Tensor& b) {
  SALIENT_CHECK(a.numel() == b.numel() && a.numel() > 0, "spearman: the maps differ in size (", a.numel(), " vs ",
                b.numel(), ")");
  return detail::rank_correlation(detail::mean_ranks(a), detail::mean_ranks(b));
}

double ssim(const at::Tensor& a, const at::Tensor& b) {
  SALIENT_CHECK(a.dim() == 2 && a.sizes() == b.sizes(), "ssim: expected two [H,W] maps of one size");
  auto unit = [](const at::Tensor& t) {
    at::Tensor d = t.detach().to(at::kCPU, at::kDouble);  // small maps: the CPU, wherever they were made
    const double lo = d.min().item<double>(), hi = d.max().item<double>();
    return hi > lo ? (d - lo) / (hi - lo) : at::zeros_like(d);
  };
  at::Tensor x = unit(a).view({1, 1, a.size(0), a.size(1)}), y = unit(b).view({1, 1, a.size(0), a.size(1)});
  int64_t k = std::min<int64_t>({11, a.size(0), a.size(1)});
  if (k % 2 == 0) --k;
  at::Tensor g = at::arange(k, at::kDouble) - static_cast<double>(k / 2);
  g = at::exp(-(g * g) / (2 * 1.5 * 1.5));
  g = g / g.sum();
  // The Gaussian window is separable: a row pass and a column pass ('valid', as Wang et
  // al.) over the five images at once cost a fraction of one 2-D double convolution.
  at::Tensor five = at::cat({x, y, x * x, y * y, x * y});  // [5,1,H,W]
  at::Tensor f = at::conv2d(at::conv2d(five, g.view({1, 1, 1, k})), g.view({1, 1, k, 1}));
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  at::Tensor mx = f[0], my = f[1];
  at::Tensor sxx = f[2] - mx * mx, syy = f[3] - my * my, sxy = f[4] - mx * my;
  at::Tensor map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
  return map.mean().item<double>();
}

}  // namespace salient

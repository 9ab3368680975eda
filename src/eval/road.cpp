// ROAD (Rong et al. 2022): removed pixels are filled by noisy linear imputation, so the
// score change measures lost information rather than the model's surprise at a hole.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <cmath>
#include <vector>

#include "eval/rank.hpp"
#include "methods/common.hpp"
#include "salient/metrics.hpp"

namespace salient {

namespace {

// Rong et al.'s system for one removed set: every removed pixel equals the weighted mean
// of its in-image neighbours (1/6 edge, 1/12 corner), known pixels fixed. Stored compactly
// over the removed pixels in raster order.
struct ImputationSystem {
  int64_t h = 0, w = 0;
  std::vector<int64_t> pixel;       // unknown i -> pixel index
  std::vector<double> degree;       // sum of in-image neighbour weights
  std::vector<double> inv_degree;   // its inverse: the sweeps multiply, a division would stall them
  std::vector<int32_t> nb;          // 8 per unknown: neighbouring unknown, or m (a slot kept at 0)
  std::vector<int32_t> known_nb;    // 8 per unknown: neighbouring known pixel or -1
};

// Neighbour offsets and weights (edge 1/6, corner 1/12), k = 0..7 in raster order. The
// matrix passes use the weights as constants: an absent neighbour reads the zero slot.
constexpr int kDy[8] = {-1, -1, -1, 0, 0, 1, 1, 1}, kDx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
constexpr double kWeight[8] = {1.0 / 12, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 12};

ImputationSystem build_system(const bool* removed, int64_t h, int64_t w) {
  ImputationSystem s;
  s.h = h, s.w = w;
  std::vector<int32_t> index(h * w, -1);
  for (int64_t p = 0; p < h * w; ++p)
    if (removed[p]) index[p] = static_cast<int32_t>(s.pixel.size()), s.pixel.push_back(p);
  const size_t m = s.pixel.size();
  s.degree.assign(m, 0);
  s.nb.assign(8 * m, static_cast<int32_t>(m));
  s.known_nb.assign(8 * m, -1);
  for (size_t i = 0; i < m; ++i) {
    const int64_t y = s.pixel[i] / w, x = s.pixel[i] % w;
    for (int k = 0; k < 8; ++k) {
      const int64_t yy = y + kDy[k], xx = x + kDx[k];
      if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
      const int64_t q = yy * w + xx;
      s.degree[i] += kWeight[k];
      if (index[q] >= 0)
        s.nb[8 * i + k] = index[q];
      else
        s.known_nb[8 * i + k] = static_cast<int32_t>(q);
    }
  }
  s.inv_degree.resize(m);
  for (size_t i = 0; i < m; ++i) s.inv_degree[i] = 1.0 / s.degree[i];
  return s;
}

// Solves the system for C channels at once (image, out: C planes of H*W values) by
// conjugate gradients with a symmetric Gauss-Seidel (SSOR) preconditioner: the matrix is
// symmetric and positive definite whenever a pixel is known, and SSOR cuts the iterations
// several-fold on these Laplacian-like systems. Each channel runs its own iteration (its
// own step sizes and stopping test); they share every pass over the matrix, which is
// what the solve spends its time on. Writes the removed pixels of `out`.
template <int C>
void solve_channels(const ImputationSystem& s, const float* image, float* out) {
  const size_t m = s.pixel.size();
  if (m == 0) return;
  const int64_t plane = s.h * s.w;
  // Vectors the matrix reads have a zero slot m for absent neighbours: no branches.
  std::vector<double> b(m * C, 0), v(m * C, 0), r(m * C), z(m * C + C, 0), p(m * C + C, 0), ap(m * C), y(m * C + C, 0);
  for (size_t i = 0; i < m; ++i)
    for (int k = 0; k < 8; ++k)
      if (s.known_nb[8 * i + k] >= 0)
        for (int c = 0; c < C; ++c) b[i * C + c] += kWeight[k] * image[c * plane + s.known_nb[8 * i + k]];
  auto apply = [&](const std::vector<double>& in, std::vector<double>& res) {
    for (size_t i = 0; i < m; ++i) {
      double acc[C];
      for (int c = 0; c < C; ++c) acc[c] = s.degree[i] * in[i * C + c];
      for (int k = 0; k < 8; ++k) {
        const int32_t j = s.nb[8 * i + k];
        for (int c = 0; c < C; ++c) acc[c] -= kWeight[k] * in[j * C + c];
      }
      for (int c = 0; c < C; ++c) res[i * C + c] = acc[c];
    }
  };
  constexpr double omega = 1.9;  // measured best at 224x224 (1.5: 1.6x slower; 1.0: 2.7x)
  auto precondition = [&](const std::vector<double>& in, std::vector<double>& res) {
    for (size_t i = 0; i < m; ++i) {  // (D + wL) y = in
      double acc[C];
      for (int c = 0; c < C; ++c) acc[c] = in[i * C + c];
      for (int k = 0; k < 4; ++k) {  // neighbours 0..3 come earlier in raster order
        const int32_t j = s.nb[8 * i + k];
        for (int c = 0; c < C; ++c) acc[c] += omega * kWeight[k] * y[j * C + c];
      }
      for (int c = 0; c < C; ++c) y[i * C + c] = acc[c] * s.inv_degree[i];
    }
    for (size_t i = m; i-- > 0;) {  // (D + wU) res = D y
      double acc[C];
      for (int c = 0; c < C; ++c) acc[c] = s.degree[i] * y[i * C + c];
      for (int k = 4; k < 8; ++k) {
        const int32_t j = s.nb[8 * i + k];
        for (int c = 0; c < C; ++c) acc[c] += omega * kWeight[k] * res[j * C + c];
      }
      for (int c = 0; c < C; ++c) res[i * C + c] = acc[c] * s.inv_degree[i];
    }
  };
  auto dot = [&](const std::vector<double>& a, const std::vector<double>& e, double* res) {
    for (int c = 0; c < C; ++c) res[c] = 0;
    for (size_t i = 0; i < m; ++i)
      for (int c = 0; c < C; ++c) res[c] += a[i * C + c] * e[i * C + c];
  };
  r = b;
  double bb[C], rz[C], rr[C], pap[C], rz_new[C], alpha[C], beta[C];
  bool active[C];
  dot(b, b, bb);
  precondition(r, z);
  p = z;
  dot(r, z, rz);
  // Relative residual 1e-5: errors about 1e-4 at 224x224, far below the imputer's noise
  // (0.01), at half the iterations of 1e-7.
  const int64_t max_iterations = 10 * (s.h + s.w) + 100;
  dot(r, r, rr);
  for (int c = 0; c < C; ++c) active[c] = bb[c] > 0 && rr[c] > 1e-10 * bb[c];
  for (int64_t it = 0; it < max_iterations; ++it) {
    if (std::none_of(active, active + C, [](bool a) { return a; })) break;
    apply(p, ap);
    dot(p, ap, pap);
    for (int c = 0; c < C; ++c) {
      if (active[c] && pap[c] <= 0) active[c] = false;
      alpha[c] = active[c] ? rz[c] / pap[c] : 0.0;  // a finished channel stays where it is
    }
    for (size_t i = 0; i < m; ++i)
      for (int c = 0; c < C; ++c) v[i * C + c] += alpha[c] * p[i * C + c], r[i * C + c] -= alpha[c] * ap[i * C + c];
    precondition(r, z);
    dot(r, z, rz_new);
    for (int c = 0; c < C; ++c) {
      beta[c] = active[c] ? rz_new[c] / rz[c] : 0.0;
      if (active[c]) rz[c] = rz_new[c];
    }
    for (size_t i = 0; i < m; ++i)
      for (int c = 0; c < C; ++c) p[i * C + c] = z[i * C + c] + beta[c] * p[i * C + c];
    dot(r, r, rr);
    for (int c = 0; c < C; ++c) active[c] = active[c] && rr[c] > 1e-10 * bb[c];
  }
  for (size_t i = 0; i < m; ++i)
    for (int c = 0; c < C; ++c) out[c * plane + s.pixel[i]] = static_cast<float>(v[i * C + c]);
}

// Imputes rows x [B,C,H,W] at removed [B,H,W] (bool), adding noise [B,C,H,W] there.
at::Tensor impute(const at::Tensor& x, const at::Tensor& removed, const at::Tensor& noise) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor xs = x.to(at::kFloat).contiguous();
  at::Tensor filled = xs.clone();
  at::Tensor rm = removed.to(at::kBool).contiguous();
  const float* src = xs.data_ptr<float>();
  float* dst = filled.data_ptr<float>();
  const bool* rp = rm.data_ptr<bool>();
  // One system per row, shared by its channels. Rows differ in size many-fold (10% to 90%
  // removed), so threads take the next row as they free up, largest first, rather than
  // fixed halves of the range.
  std::vector<std::pair<int64_t, int64_t>> order;  // (removed pixels, row)
  for (int64_t r = 0; r < b; ++r)
    order.emplace_back(std::count(rp + r * h * w, rp + (r + 1) * h * w, true), r);
  std::sort(order.begin(), order.end(), std::greater<>());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(b, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t k = next++; k < b; k = next++) {
      const int64_t r = order[k].second;
      ImputationSystem s = build_system(rp + r * h * w, h, w);
      const float* in = src + r * c * h * w;
      float* res = dst + r * c * h * w;
      if (c == 3) {
        solve_channels<3>(s, in, res);
      } else {
        for (int64_t ch = 0; ch < c; ++ch) solve_channels<1>(s, in + ch * h * w, res + ch * h * w);
      }
    }
  });
  return at::where(removed.unsqueeze(1), filled + noise, xs);
}

}  // namespace

at::Tensor noisy_linear_imputation(const at::Tensor& x, const at::Tensor& removed, double noise, uint64_t seed) {
  at::Tensor xf = detail::checked_input(x, "noisy_linear_imputation");
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3);
  SALIENT_CHECK(removed.defined() && removed.dim() == 3 && removed.size(0) == n && removed.size(1) == h &&
                    removed.size(2) == w,
                "noisy_linear_imputation: the mask must be [N,H,W] like the input ", detail::shape_str(xf.sizes()), ", got ",
                removed.defined() ? detail::shape_str(removed.sizes()) : std::string("undefined"));
  SALIENT_CHECK(noise >= 0, "noisy_linear_imputation: noise must be >= 0, got ", noise);
  at::Tensor r = removed != 0;
  SALIENT_CHECK(!(r.flatten(1).all(1).any().item<bool>()), "noisy_linear_imputation: a sample has every pixel removed; "
                "nothing is left to impute from");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor z = at::randn(xf.sizes(), gen, xf.options()) * noise;
  return impute(xf, r, z);
}

RoadResult road(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
                const RoadOptions& o) {
  at::Tensor xf = detail::checked_input(x, "road");
  const int64_t n = xf.size(0), c = xf.size(1), h = xf.size(2), w = xf.size(3), hw = h * w;
  at::Tensor rank = detail::saliency_rank(map, xf, o.reduce(), "road");
  SALIENT_CHECK(!o.fractions().empty(), "road: fractions is empty");
  for (double f : o.fractions())
    SALIENT_CHECK(f > 0 && f < 1, "road: fractions must lie in (0, 1), got ", f);
  SALIENT_CHECK(o.noise() >= 0, "road: noise must be >= 0, got ", o.noise());
  SALIENT_CHECK(o.memory_budget() > 0, "road: memory_budget must be > 0");
  const auto inference = detail::inference("road", o.optimized(), o.precision());
  const int64_t k = static_cast<int64_t>(o.fractions().size()), per = 2 * k;
  std::vector<int64_t> counts;
  for (double f : o.fractions())
    counts.push_back(std::clamp<int64_t>(static_cast<int64_t>(std::llround(f * static_cast<double>(hw))), 1, hw - 1));
  // One noise draw per (order, fraction), shared by the samples: a sample's result does
  // not depend on the rest of its batch.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  at::Tensor noise = at::randn({per, c, h, w}, gen, xf.options()) * o.noise();
  Attribution probe;
  const auto classes = detail::sample_classes(model, xf, target, inference, &probe);
  const int64_t rows = n * per;
  auto make_rows = [&](int64_t r0, int64_t r1) {
    std::vector<at::Tensor> masks;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = r / per, j = r % per, m = counts[j % k];
      masks.push_back(j < k ? rank[s] < m : rank[s] >= hw - m);  // MoRF: top m; LeRF: bottom m
    }
    at::Tensor idx = at::arange(r0, r1, at::kLong);
    return impute(xf.index_select(0, idx.div(per, "floor")), at::stack(masks).view({r1 - r0, h, w}),
                  noise.index_select(0, idx.remainder(per)));
  };
  at::Tensor scores =
      detail::batched_scores(rows, std::min(rows, detail::forward_chunk_rows(model, xf, o.memory_budget())),
                             detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / per; },
                             classes, target, o.score())
          .view({n, 2, k});
  RoadResult res;
  res.fraction = at::tensor(o.fractions(), at::kDouble).to(at::kFloat);
  res.morf = scores.select(1, 0).contiguous();
  res.lerf = scores.select(1, 1).contiguous();
  res.morf_mean = res.morf.mean(1);
  res.lerf_mean = res.lerf.mean(1);
  res.combined = (res.lerf_mean - res.morf_mean) / 2;
  res.targets = classes.empty() ? at::full({n}, -1, at::kLong) : at::tensor(classes);
  res.forward_samples = probe.forward_samples + rows;
  return res;
}

}  // namespace salient

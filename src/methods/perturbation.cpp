#include "salient/perturbation.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "methods/common.hpp"

namespace salient {

namespace {

// Window starts along one side: 0, s, 2s, ... with ceil((D - k) / s) + 1 windows (Captum's
// count), those that start inside the image.
std::vector<int64_t> window_starts(int64_t size, int64_t window, int64_t stride) {
  std::vector<int64_t> starts;
  const int64_t count = (size - window + stride - 1) / stride + 1;
  // A stride past the image's end leaves Captum's last window wholly outside: it would
  // occlude nothing, so it is not run.
  for (int64_t i = 0; i < count && i * stride < size; ++i) starts.push_back(i * stride);
  return starts;
}

}  // namespace

Attribution occlusion(const Model& model, const at::Tensor& x, const Target& target, const OcclusionOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "occlusion");
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3);
  SALIENT_CHECK(o.window() >= 1 && o.stride() >= 1, "occlusion: window and stride must be >= 1, got ", o.window(),
                " and ", o.stride());
  SALIENT_CHECK(o.window() <= h && o.window() <= w, "occlusion: window ", o.window(), " is larger than the image (",
                h, "x", w, ")");
  SALIENT_CHECK(o.memory_budget() > 0, "occlusion: memory_budget must be > 0");
  const auto inference = detail::inference("occlusion", o.optimized(), o.precision());
  auto ys = window_starts(h, o.window(), o.stride()), xs = window_starts(w, o.window(), o.stride());
  const int64_t per_sample = static_cast<int64_t>(ys.size() * xs.size());

  Attribution a;
  const auto classes = detail::sample_classes(model, xf, target, inference, &a);
  // Row 0 of each sample is the clean input; rows 1..P occlude window p - 1.
  const int64_t rows = n * (per_sample + 1);
  auto window_of = [&](int64_t p, int64_t* y0, int64_t* x0) {
    *y0 = ys[p / xs.size()];
    *x0 = xs[p % xs.size()];
  };
  auto make_rows = [&](int64_t r0, int64_t r1) {
    std::vector<at::Tensor> parts;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t sample = r / (per_sample + 1), p = r % (per_sample + 1);
      at::Tensor row = xf[sample].clone();
      if (p > 0) {
        int64_t y0, x0;
        window_of(p - 1, &y0, &x0);
        row.narrow(1, y0, std::min(o.window(), h - y0)).narrow(2, x0, std::min(o.window(), w - x0)).fill_(o.baseline());
      }
      parts.push_back(row);
    }
    return at::stack(parts);
  };
  at::Tensor scores = detail::batched_scores(model, rows, forward_chunk_rows(model, xf, o.memory_budget()), detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / (per_sample + 1); }, classes, target, o.score());
  // Windows are summed on the CPU (a GPU would wait once per window read) and the map
  // moved to the input's device.
  at::Tensor sum = at::zeros({n, 1, h, w}), count = at::zeros({n, 1, h, w});
  auto sc = scores.view({n, per_sample + 1}).to(at::kCPU);
  for (int64_t s = 0; s < n; ++s) {
    const double clean = sc[s][0].item<double>();
    for (int64_t p = 0; p < per_sample; ++p) {
      int64_t y0, x0;
      window_of(p, &y0, &x0);
      const int64_t wh = std::min(o.window(), h - y0), ww = std::min(o.window(), w - x0);
      sum[s].narrow(1, y0, wh).narrow(2, x0, ww).add_(clean - sc[s][p + 1].item<double>());
      count[s].narrow(1, y0, wh).narrow(2, x0, ww).add_(1.0);
    }
  }
  a.map = (sum / count.clamp_min(1.0)).to(xf.device()).expand_as(xf).contiguous();
  a.targets = detail::classes_tensor(classes, n, xf);
  a.forward_samples += rows;
  return a;
}

at::Tensor rise_masks(int64_t n_masks, int64_t height, int64_t width, const RiseOptions& o) {
  SALIENT_CHECK(n_masks >= 1, "rise: n_masks must be >= 1, got ", n_masks);
  SALIENT_CHECK(o.keep() > 0 && o.keep() <= 1, "rise: keep must be in (0, 1], got ", o.keep());
  // A cell as large as the image leaves a 1x1 grid: every mask would be one constant.
  SALIENT_CHECK(o.cell() >= 0, "rise: cell must be >= 0 (0: automatic), got ", o.cell());
  SALIENT_CHECK(o.cell() <= std::max(height, width), "rise: cell ", o.cell(), " is larger than the image (", height,
                "x", width, ")");
  const int64_t cell = o.cell() > 0 ? o.cell() : (std::max(height, width) + 6) / 7;
  const int64_t gh = (height + cell - 1) / cell, gw = (width + cell - 1) / cell;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  at::Tensor grid = (at::rand({n_masks, 1, gh, gw}, gen) < o.keep()).to(at::kFloat);
  at::Tensor shifts = at::randint(0, cell, {n_masks, 2}, gen, at::TensorOptions().dtype(at::kLong)).contiguous();
  const int64_t* sh = shifts.data_ptr<int64_t>();
  // Upsample to one cell more than the image, then crop at a random offset in [0, cell).
  // A chunk at a time: all at once, the uncropped copies alone would take 1.3x the masks
  // (2000 masks at 224x224: 524 MB).
  at::Tensor masks = at::empty({n_masks, 1, height, width}, at::kFloat);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{16} << 20) / ((gh + 1) * cell * (gw + 1) * cell * 4));
  for (int64_t i0 = 0; i0 < n_masks; i0 += chunk) {
    const int64_t k = std::min(chunk, n_masks - i0);
    at::Tensor up = at::upsample_bilinear2d(grid.narrow(0, i0, k), {(gh + 1) * cell, (gw + 1) * cell},
                                            /*align_corners=*/false);
    for (int64_t i = 0; i < k; ++i)
      masks[i0 + i].copy_(up[i].narrow(1, sh[2 * (i0 + i)], height).narrow(2, sh[2 * (i0 + i) + 1], width));
  }
  return masks;
}

Attribution rise(const Model& model, const at::Tensor& x, const Target& target, const RiseOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "rise");
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3), m = o.n_masks();
  SALIENT_CHECK(o.memory_budget() > 0, "rise: memory_budget must be > 0");
  const auto inference = detail::inference("rise", o.optimized(), o.precision());
  at::Tensor masks = rise_masks(m, h, w, o).to(xf.device());  // drawn on the CPU: the same on every device
  Attribution a;
  const auto classes = detail::sample_classes(model, xf, target, inference, &a);
  const int64_t rows = n * m;  // sample-major: row = s * m + i
  auto make_rows = [&](int64_t r0, int64_t r1) {
    at::Tensor r = detail::row_range(r0, r1, xf);
    return xf.index_select(0, r.div(m, "floor")) * masks.index_select(0, r.remainder(m));
  };
  at::Tensor scores = detail::batched_scores(model, rows, forward_chunk_rows(model, xf, o.memory_budget()), detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / m; }, classes, target, o.score());
  // Σ_i score_i M_i / (m p), per sample.
  at::Tensor weighted = at::matmul(scores.view({n, m}), masks.view({m, h * w}));
  a.map = (weighted / (static_cast<double>(m) * o.keep())).view({n, 1, h, w});
  a.targets = detail::classes_tensor(classes, n, xf);
  a.forward_samples += rows;
  return a;
}

}  // namespace salient

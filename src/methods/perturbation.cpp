#include "salient/perturbation.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

namespace {

// RISE's masks, made a range at a time. Each mask is its own grid of kept cells, upsampled
// bilinearly (align_corners = false, as at::upsample_bilinear2d) to one cell more than the
// image and cropped at its own random shift, so any range equals those rows of all the
// masks. Interpolating the grid's columns first leaves each output row a weighted sum of
// two short rows, vectorised: 2000 masks at 224x224 take 17 ms on 2 cores, where upsampling
// the uncropped canvases and copying out the crops took 590 ms.
class RiseMaskMaker {
 public:
  RiseMaskMaker(int64_t n_masks, int64_t height, int64_t width, const RiseOptions& o) : h_(height), w_(width) {
    SALIENT_CHECK(n_masks >= 1, "rise: n_masks must be >= 1, got ", n_masks);
    SALIENT_CHECK(o.keep() > 0 && o.keep() <= 1, "rise: keep must be in (0, 1], got ", o.keep());
    // A cell as large as the image leaves a 1x1 grid: every mask would be one constant.
    SALIENT_CHECK(o.cell() >= 0, "rise: cell must be >= 0 (0: automatic), got ", o.cell());
    SALIENT_CHECK(o.cell() <= std::max(height, width), "rise: cell ", o.cell(), " is larger than the image (", height,
                  "x", width, ")");
    cell_ = o.cell() > 0 ? o.cell() : (std::max(height, width) + 6) / 7;
    gh_ = (height + cell_ - 1) / cell_, gw_ = (width + cell_ - 1) / cell_;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
    grid_ = (at::rand({n_masks, 1, gh_, gw_}, gen) < o.keep()).to(at::kFloat).contiguous();
    shifts_ = at::randint(0, cell_, {n_masks, 2}, gen, at::TensorOptions().dtype(at::kLong)).contiguous();
    weights(gh_, (gh_ + 1) * cell_, &iy_, &ly_);
    weights(gw_, (gw_ + 1) * cell_, &ix_, &lx_);
  }

  // Masks i0 .. i0 + k - 1: [k, 1, H, W], float, on the CPU.
  at::Tensor make(int64_t i0, int64_t k) const {
    at::Tensor out = at::empty({k, 1, h_, w_}, at::kFloat);
    const float* grid = grid_.data_ptr<float>();
    const int64_t* shift = shifts_.data_ptr<int64_t>();
    float* dst = out.data_ptr<float>();
    at::parallel_for(0, k, 1, [&](int64_t a, int64_t b) {
      std::vector<float> cols(gh_ * w_);  // the grid's rows, interpolated along x and cropped
      for (int64_t i = a; i < b; ++i) {
        const float* g = grid + (i0 + i) * gh_ * gw_;
        const int64_t sy = shift[2 * (i0 + i)], sx = shift[2 * (i0 + i) + 1];
        for (int64_t r = 0; r < gh_; ++r)
          for (int64_t x = 0; x < w_; ++x) {
            const int64_t u = x + sx;
            cols[r * w_ + x] = lx_[2 * u] * g[r * gw_ + ix_[2 * u]] + lx_[2 * u + 1] * g[r * gw_ + ix_[2 * u + 1]];
          }
        for (int64_t y = 0; y < h_; ++y) {
          const int64_t v = y + sy;
          const float l0 = ly_[2 * v], l1 = ly_[2 * v + 1];
          const float* __restrict c0 = cols.data() + iy_[2 * v] * w_;
          const float* __restrict c1 = cols.data() + iy_[2 * v + 1] * w_;
          float* __restrict o = dst + (i * h_ + y) * w_;
          for (int64_t x = 0; x < w_; ++x) o[x] = l0 * c0[x] + l1 * c1[x];
        }
      }
    });
    return out;
  }

 private:
  // Linear interpolation from `in` points to `out`, align_corners = false, as ATen computes
  // it: source = max(in / out * (d + 0.5) - 0.5, 0) in float; the two neighbours' indices
  // and weights for each output d, interleaved.
  static void weights(int64_t in, int64_t out, std::vector<int64_t>* index, std::vector<float>* lambda) {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    index->resize(2 * out), lambda->resize(2 * out);
    for (int64_t d = 0; d < out; ++d) {
      const float src = std::max(scale * (static_cast<float>(d) + 0.5f) - 0.5f, 0.f);
      const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
      const float l1 = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
      (*index)[2 * d] = i0, (*index)[2 * d + 1] = i0 < in - 1 ? i0 + 1 : i0;
      (*lambda)[2 * d] = 1.f - l1, (*lambda)[2 * d + 1] = l1;
    }
  }

  int64_t h_, w_, cell_ = 0, gh_ = 0, gw_ = 0;
  at::Tensor grid_, shifts_;
  std::vector<int64_t> iy_, ix_;
  std::vector<float> ly_, lx_;
};

}  // namespace

at::Tensor rise_masks(int64_t n_masks, int64_t height, int64_t width, const RiseOptions& o) {
  return RiseMaskMaker(n_masks, height, width, o).make(0, n_masks);
}

Attribution rise(const Model& model, const at::Tensor& x, const Target& target, const RiseOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "rise");
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3), m = o.n_masks();
  SALIENT_CHECK(o.memory_budget() > 0, "rise: memory_budget must be > 0");
  const auto inference = detail::inference("rise", o.optimized(), o.precision());
  const RiseMaskMaker maker(m, h, w, o);  // drawn on the CPU: the same masks on every device
  // The masks are held when they take at most an eighth of the budget (2000 at 96x96: 74
  // MB); beyond that each chunk of rows makes its own and the weighted sum makes them again,
  // a block at a time (2000 at 224x224 would hold 401 MB; making them twice costs less than
  // 0.1% of ResNet-18's 2000 forwards).
  const int64_t mask_bytes = h * w * static_cast<int64_t>(sizeof(float)), share = o.memory_budget() / 8;
  const bool hold = m * mask_bytes <= share;
  const at::Tensor held = hold ? maker.make(0, m).to(xf.device()) : at::Tensor();
  auto masks = [&](int64_t i0, int64_t k) { return hold ? held.narrow(0, i0, k) : maker.make(i0, k).to(xf.device()); };
  Attribution a;
  const auto classes = detail::sample_classes(model, xf, target, inference, &a);
  const int64_t rows = n * m;  // sample-major: row = s * m + i
  auto make_rows = [&](int64_t r0, int64_t r1) {
    std::vector<at::Tensor> parts;  // one per sample the chunk touches
    for (int64_t r = r0; r < r1;) {
      const int64_t s = r / m, i = r % m, k = std::min(r1 - r, m - i);
      parts.push_back(xf.narrow(0, s, 1) * masks(i, k));
      r += k;
    }
    return parts.size() == 1 ? parts[0] : at::cat(parts);
  };
  const int64_t chunk = forward_chunk_rows(model, xf, o.memory_budget() - (hold ? m * mask_bytes : 0));
  at::Tensor scores = detail::batched_scores(model, rows, chunk, detail::input_rows(model, make_rows, inference),
                                             [&](int64_t r) { return r / m; }, classes, target, o.score())
                          .view({n, m});
  // Σ_i score_i M_i / (m p), per sample.
  at::Tensor weighted = at::zeros({n, h * w}, scores.options());
  const int64_t block = std::max<int64_t>(1, share / mask_bytes);
  for (int64_t i0 = 0; i0 < m; i0 += block) {
    const int64_t k = std::min(block, m - i0);
    weighted.add_(at::matmul(scores.narrow(1, i0, k), masks(i0, k).view({k, h * w})));
  }
  a.map = (weighted / (static_cast<double>(m) * o.keep())).view({n, 1, h, w});
  a.targets = detail::classes_tensor(classes, n, xf);
  a.forward_samples += rows;
  return a;
}

}  // namespace salient

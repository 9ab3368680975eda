#include "salient/cam.hpp"

#include <ATen/core/grad_mode.h>

#include <cmath>
#include <functional>

#include "methods/gradient_pass.hpp"
#include "salient/gradient.hpp"

namespace salient {

namespace {

// A layer's activations, for the forward-only CAMs (the gradient ones use
// detail::gradient_pass).
struct LayerPass {
  at::Tensor act;  // [N,C,h,w], detached
  Attribution result;
  int64_t height = 0, width = 0;
};

LayerPass layer_pass(const Model& model, const at::Tensor& x, const Target& target, const std::string& requested,
                     const char* method) {
  at::Tensor xf = detail::checked_input(model, x, method);
  LayerPass p;
  p.height = xf.size(2);
  p.width = xf.size(3);
  std::string layer = requested.empty() ? model.default_cam_layer(detail::sample_shape(xf)) : requested;
  auto fr = model.forward(xf, {layer}, Autograd::Off);
  const at::Tensor& act = fr.taps[0];
  SALIENT_CHECK(act.dim() == 4, method, ": layer '", layer, "' outputs ", detail::shape_str(act.sizes()),
                "; CAM methods need a 4-D [N, C, h, w] output (pick a convolutional layer)");
  p.result.layer = layer;
  p.result.targets = target.resolve(fr.output);
  p.result.forward_samples = xf.size(0);
  p.act = act.detach();
  p.result.output = fr.output.detach();
  return p;
}

// ReLU and upsampling, common to all variants.
Attribution finish(LayerPass& p, const at::Tensor& raw, const at::Tensor& weights) {
  Attribution a = std::move(p.result);
  detail::finish_cam(&a, raw, weights, p.height, p.width);
  return a;
}

Attribution gradient_cam(const Model& model, const at::Tensor& x, const Target& target, const CamOptions& options,
                         const char* method) {
  return detail::from_gradient_pass(detail::gradient_pass(model, x, target, options.score(), {method}, options.layer()),
                                    method);
}

}  // namespace

Attribution gradcam(const Model& model, const at::Tensor& x, const Target& target, const GradCamOptions& options) {
  return gradient_cam(model, x, target, options, "gradcam");
}

Attribution gradcam_plusplus(const Model& model, const at::Tensor& x, const Target& target, const GradCamPlusPlusOptions& options) {
  return gradient_cam(model, x, target, options, "gradcam_plusplus");
}

Attribution xgradcam(const Model& model, const at::Tensor& x, const Target& target, const XGradCamOptions& options) {
  return gradient_cam(model, x, target, options, "xgradcam");
}

Attribution hirescam(const Model& model, const at::Tensor& x, const Target& target, const HiResCamOptions& options) {
  return gradient_cam(model, x, target, options, "hirescam");
}

Attribution layercam(const Model& model, const at::Tensor& x, const Target& target, const LayerCamOptions& options) {
  return gradient_cam(model, x, target, options, "layercam");
}

Attribution gradcam_elementwise(const Model& model, const at::Tensor& x, const Target& target, const GradCamElementwiseOptions& options) {
  return gradient_cam(model, x, target, options, "gradcam_elementwise");
}

Attribution eigencam(const Model& model, const at::Tensor& x, const Target& target, const EigenCamOptions& options) {
  return gradient_cam(model, x, target, options, "eigencam");
}

Attribution eigengradcam(const Model& model, const at::Tensor& x, const Target& target, const EigenGradCamOptions& options) {
  return gradient_cam(model, x, target, options, "eigengradcam");
}

namespace {

// Score-CAM on the channels `selected` [N, k] of each sample.
Attribution score_weighted(const Model& model, LayerPass& p, const at::Tensor& xf, const Target& target,
                           const at::Tensor& selected, Score score, int64_t budget,
                           const detail::Inference& inference) {
  const int64_t n = xf.size(0), k = selected.size(1), c = p.act.size(1);
  const int64_t h = p.act.size(2), w = p.act.size(3);
  std::vector<int64_t> classes;
  if (!target.is_function()) classes = detail::to_vector(p.result.targets);
  auto make_rows = [&](int64_t r0, int64_t r1) {
    at::Tensor r = detail::row_range(r0, r1, xf);
    at::Tensor sample = r.div(k, "floor");
    at::Tensor channel = selected.flatten().index_select(0, r);
    at::Tensor maps = p.act.flatten(0, 1).index_select(0, sample * c + channel).view({-1, 1, h, w});
    at::Tensor up = at::upsample_bilinear2d(maps, {p.height, p.width}, /*align_corners=*/true);
    at::Tensor flat = up.flatten(1);
    at::Tensor lo = std::get<0>(flat.min(1)).view({-1, 1, 1, 1}), hi = std::get<0>(flat.max(1)).view({-1, 1, 1, 1});
    return xf.index_select(0, sample) * ((up - lo) / (hi - lo + 1e-8));
  };
  const int64_t rows = n * k;
  at::Tensor scores = detail::batched_scores(model, rows, forward_chunk_rows(model, xf, budget), detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / k; }, classes, target, score);
  at::Tensor weights = at::zeros({n, c}, p.act.options());
  weights.scatter_(1, selected, at::softmax(scores.view({n, k}), 1));
  p.result.forward_samples += rows;
  at::Tensor raw = (weights.unsqueeze(-1).unsqueeze(-1) * p.act).sum(1, /*keepdim=*/true);
  return finish(p, raw, weights);
}

}  // namespace

Attribution scorecam(const Model& model, const at::Tensor& x, const Target& target, const ScoreCamOptions& o) {
  SALIENT_CHECK(o.memory_budget() > 0, "scorecam: memory_budget must be > 0");
  const auto inference = detail::inference("scorecam", o.optimized(), o.precision());
  at::Tensor xf = detail::checked_input(model, x, "scorecam");
  LayerPass p = layer_pass(model, xf, target, o.layer(), "scorecam");
  at::NoGradGuard no_grad;
  at::Tensor all = detail::row_range(0, p.act.size(1), xf).unsqueeze(0).expand({xf.size(0), -1});
  return score_weighted(model, p, xf, target, all.contiguous(), o.score(), o.memory_budget(), inference);
}

Attribution faster_scorecam(const Model& model, const at::Tensor& x, const Target& target,
                            const FasterScoreCamOptions& o) {
  SALIENT_CHECK(o.top_k() > 0, "faster_scorecam: top_k must be > 0, got ", o.top_k());
  SALIENT_CHECK(o.memory_budget() > 0, "faster_scorecam: memory_budget must be > 0");
  const auto inference = detail::inference("faster_scorecam", o.optimized(), o.precision());
  at::Tensor xf = detail::checked_input(model, x, "faster_scorecam");
  LayerPass p =
      layer_pass(model, xf, target, o.layer(), "faster_scorecam");
  at::NoGradGuard no_grad;
  const int64_t c = p.act.size(1);
  int64_t k = o.top_k() < 1 ? static_cast<int64_t>(std::ceil(o.top_k() * c)) : static_cast<int64_t>(o.top_k());
  k = std::max<int64_t>(1, std::min(k, c));
  at::Tensor selected = std::get<1>(p.act.flatten(2).var(2).topk(k, 1));
  return score_weighted(model, p, xf, target, selected.contiguous(), o.score(), o.memory_budget(), inference);
}

namespace {

// The layer's output and the state to re-run the network from it (forward-only CAMs).
struct Split {
  salient::LayerState state;
  LayerPass pass;
  at::Tensor xf;
};

Split split_at(const Model& model, const at::Tensor& x, const Target& target, const std::string& requested,
               const char* method) {
  Split s;
  s.xf = detail::checked_input(model, x, method);
  std::string layer = requested.empty() ? model.default_cam_layer(detail::sample_shape(s.xf)) : requested;
  model.check_layer(layer);
  s.state = model.run_to_layer(s.xf, layer);
  SALIENT_CHECK(s.state.activation.dim() == 4, method, ": layer '", layer, "' outputs ",
                detail::shape_str(s.state.activation.sizes()),
                "; CAM methods need a 4-D [N, C, h, w] output (pick a convolutional layer)");
  s.pass.act = s.state.activation;
  s.pass.height = s.xf.size(2);
  s.pass.width = s.xf.size(3);
  s.pass.result.layer = layer;
  s.pass.result.output = s.state.output;
  s.pass.result.targets = target.resolve(s.state.output);
  s.pass.result.forward_samples = s.xf.size(0);
  return s;
}

// Scores of the network's rest on activation rows make_rows(r0, r1), row r of sample
// sample_of(r).
at::Tensor suffix_scores(const Model& model, Split& s, const Target& target, Score score, int64_t rows,
                         int64_t per_sample, int64_t budget, const std::function<at::Tensor(int64_t, int64_t)>& make_rows) {
  std::vector<int64_t> classes;
  if (!target.is_function()) classes = detail::to_vector(s.pass.result.targets);
  auto outputs_of = [&](int64_t r0, int64_t r1) {
    at::Tensor examples = detail::row_range(r0, r1, s.xf).div(per_sample, "floor");
    return model.run_from_layer(s.state, make_rows(r0, r1), examples);
  };
  at::Tensor scores = detail::batched_scores(
      model, rows, forward_chunk_rows(model, s.xf, budget), outputs_of,
      [&](int64_t r) { return r / per_sample; }, classes, target, score);
  s.pass.result.forward_samples += rows;  // partial forwards: the layers after the split
  return scores;
}

}  // namespace

Attribution ablationcam(const Model& model, const at::Tensor& x, const Target& target, const AblationCamOptions& o) {
  SALIENT_CHECK(o.memory_budget() > 0, "ablationcam: memory_budget must be > 0");
  Split s = split_at(model, x, target, o.layer(), "ablationcam");
  at::NoGradGuard no_grad;
  const at::Tensor& act = s.pass.act;
  const int64_t n = act.size(0), c = act.size(1);
  // pytorch-grad-cam's ablation value: 0 when the activations bottom out at 0 (after a
  // ReLU), else far below anything they hold.
  at::Tensor lows = std::get<0>(act.flatten(1).min(1));
  at::Tensor values = at::where(lows == 0, at::zeros_like(lows), lows - 1e7);
  auto make_rows = [&](int64_t r0, int64_t r1) {
    at::Tensor r = detail::row_range(r0, r1, act);
    at::Tensor sample = r.div(c, "floor"), channel = r.remainder(c);
    at::Tensor rows = act.index_select(0, sample).clone();
    // Row i's channel channel[i] set to its sample's value, in one indexed write (a loop
    // of element reads would wait on the device once per row).
    at::Tensor planes = rows.view({r1 - r0, c, -1});
    planes.index_put_({detail::row_range(0, r1 - r0, act), channel},
                      values.index_select(0, sample).to(planes.scalar_type()).unsqueeze(1).expand({r1 - r0, planes.size(2)}));
    return rows;
  };
  at::Tensor ablated = suffix_scores(model, s, target, o.score(), n * c, c, o.memory_budget(), make_rows).view({n, c});
  at::Tensor original = target.scores(s.state.output, s.pass.result.targets, o.score()).to(at::kFloat).view({n, 1});
  at::Tensor weights = (original - ablated) / original;
  at::Tensor raw = (weights.unsqueeze(-1).unsqueeze(-1) * act).sum(1, /*keepdim=*/true);
  return finish(s.pass, raw, weights);
}

Attribution reciprocam(const Model& model, const at::Tensor& x, const Target& target, const ReciproCamOptions& o) {
  SALIENT_CHECK(o.memory_budget() > 0, "reciprocam: memory_budget must be > 0");
  Split s = split_at(model, x, target, o.layer(), "reciprocam");
  at::NoGradGuard no_grad;
  const at::Tensor& act = s.pass.act;
  const int64_t n = act.size(0), h = act.size(2), w = act.size(3), hw = h * w;
  // One spatial mask per position: a one-hot, or a 3x3 Gaussian clipped at the border.
  at::Tensor masks = at::zeros({hw, 1, h, w});  // built here, then moved to the activations' device
  const double kernel[3][3] = {{1 / 16.0, 1 / 8.0, 1 / 16.0}, {1 / 8.0, 1 / 4.0, 1 / 8.0}, {1 / 16.0, 1 / 8.0, 1 / 16.0}};
  auto mk = masks.accessor<float, 4>();
  for (int64_t i = 0; i < h; ++i)
    for (int64_t j = 0; j < w; ++j) {
      if (!o.gaussian()) {
        mk[i * w + j][0][i][j] = 1.0f;
        continue;
      }
      for (int di = -1; di <= 1; ++di)
        for (int dj = -1; dj <= 1; ++dj)
          if (i + di >= 0 && i + di < h && j + dj >= 0 && j + dj < w)
            mk[i * w + j][0][i + di][j + dj] = static_cast<float>(kernel[di + 1][dj + 1]);
    }
  masks = masks.to(act.device(), act.scalar_type());
  auto make_rows = [&](int64_t r0, int64_t r1) {
    at::Tensor r = detail::row_range(r0, r1, act);
    return act.index_select(0, r.div(hw, "floor")) * masks.index_select(0, r.remainder(hw));
  };
  at::Tensor scores = suffix_scores(model, s, target, o.score(), n * hw, hw, o.memory_budget(), make_rows);
  return finish(s.pass, scores.view({n, 1, h, w}), at::Tensor());
}

Attribution guided_gradcam(const Model& model, const at::Tensor& x, const Target& target,
                           const GuidedGradCamOptions& options) {
  return gradient_cam(model, x, target, options, "guided_gradcam");
}

Attribution fullgrad(const Model& model, const at::Tensor& x, const Target& target, const FullGradOptions& options) {
  return detail::from_gradient_pass(detail::gradient_pass(model, x, target, options.score(), {"fullgrad"}, ""),
                                    "fullgrad");
}

}  // namespace salient

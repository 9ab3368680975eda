// Parity with Captum 0.8.0 and pytorch-grad-cam 1.5.5 (tests/data/reference, copied from
// ../shared/reference), each within the tolerance its manifest gives.
#include <nlohmann/json.hpp>

#include <fstream>

#include "helpers.hpp"

using namespace testing_salient;
using salient::Model;
using salient::Target;

namespace {

const Model& smallcnn() {
  static Model m = Model::load(data("reference/smallcnn_traced.pt"));
  return m;
}

Target reference_targets() { return Target::per_sample(to_vector(reference()["targets"])); }

}  // namespace

TEST(ReferenceParity, CaptumSaliencySignedAndAbs) {
  auto a = salient::vanilla_gradient(smallcnn(), reference()["input"], reference_targets());
  EXPECT_TRUE(matches_reference(a.map, "captum_saliency_noabs"));
  EXPECT_TRUE(matches_reference(a.map.abs(), "captum_saliency_abs"));
}

TEST(ReferenceParity, CaptumLayerGradCamRawAndRelu) {
  auto a = salient::gradcam(smallcnn(), reference()["input"], reference_targets(),
                            salient::GradCamOptions().layer("features.10"));
  EXPECT_TRUE(matches_reference(a.raw, "captum_layer_gradcam_raw"));
  EXPECT_TRUE(matches_reference(a.layer_map, "captum_layer_gradcam_relu"));
  EXPECT_TRUE(matches_reference(a.weights, "pgc_gradcam_weights"));
  EXPECT_TRUE(matches_reference(a.raw.squeeze(1), "pgc_gradcam_raw"));
}

TEST(ReferenceParity, SmoothGradWithTheStoredNoise) {
  const auto& ref = reference();
  at::Tensor noise = ref["smoothgrad_noise"];  // [8, B, 3, H, W], absolute
  at::Tensor seen_stdev;
  auto opts = salient::SmoothGradOptions().n_samples(noise.size(0)).noise(
      [&](int64_t s, const at::Tensor&, const at::Tensor& stdev) {
        seen_stdev = stdev;
        return noise[s];
      });
  auto a = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(), opts);
  EXPECT_TRUE(matches_reference(a.map, "smoothgrad"));
  // Our noise std (0.15 x range per input) is the one the reference used.
  EXPECT_TRUE(close(seen_stdev, ref["smoothgrad_stdevs"], 1e-6, 1e-6));
}

TEST(ReferenceParity, SmoothGradChunkedByBudgetStillMatches) {
  const auto& ref = reference();
  at::Tensor noise = ref["smoothgrad_noise"];
  auto opts = salient::SmoothGradOptions()
                  .n_samples(noise.size(0))
                  .memory_budget(3 * smallcnn().bytes_per_sample({3, 64, 64}))
                  .noise([&](int64_t s, const at::Tensor&, const at::Tensor&) { return noise[s]; });
  auto a = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(), opts);
  EXPECT_TRUE(matches_reference(a.map, "smoothgrad"));
}

namespace {

using CamFn = std::function<salient::Attribution(const Model&, const at::Tensor&, const Target&,
                                                 const salient::CamOptions&)>;

salient::Attribution run_cam(const CamFn& fn) {
  return fn(smallcnn(), reference()["input"], reference_targets(), salient::CamOptions().layer("features.10"));
}

}  // namespace

TEST(ReferenceParity, PytorchGradCamGradientVariantsRawWeightsAndPostprocessed) {
  struct Case {
    const char* pgc;
    CamFn fn;
    bool has_weights;
  };
  std::vector<Case> cases = {
      {"gradcam", salient::gradcam, true},         {"gradcampp", salient::gradcam_plusplus, true},
      {"xgradcam", salient::xgradcam, true},       {"hirescam", salient::hirescam, false},
      {"layercam", salient::layercam, false},      {"gradcam_elementwise", salient::gradcam_elementwise, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pgc);
    auto a = run_cam(c.fn);
    std::string name = std::string("pgc_") + c.pgc;
    EXPECT_TRUE(matches_reference(a.raw.squeeze(1), name + "_raw"));
    if (c.has_weights) EXPECT_TRUE(matches_reference(a.weights, name + "_weights"));
    EXPECT_TRUE(matches_reference(salient::render::pytorch_grad_cam_scale(a.raw, 64, 64), name));
    EXPECT_TRUE(at::equal(a.layer_map, at::relu(a.raw)));
  }
}

TEST(ReferenceParity, EigenCamsMatchUpToTheSvdSignPerImage) {
  for (auto c : std::vector<std::pair<const char*, CamFn>>{{"eigencam", salient::eigencam},
                                                           {"eigengradcam", salient::eigengradcam}}) {
    SCOPED_TRACE(c.first);
    std::string name = std::string("pgc_") + c.first;
    auto a = run_cam(c.second);
    at::Tensor ours = a.raw.squeeze(1), ref = reference()[name + "_raw"];
    // numpy's SVD sign is arbitrary; align ours to it image by image, as the README says.
    at::Tensor sign = at::sign((ours * ref).sum({1, 2})).view({-1, 1, 1});
    at::Tensor aligned = ours * sign;
    EXPECT_TRUE(matches_reference(aligned, name + "_raw"));
    EXPECT_TRUE(matches_reference(salient::render::pytorch_grad_cam_scale(aligned, 64, 64), name));
  }
}

TEST(EigenCam, SignRuleMakesTheMapFollowTheMeanActivation) {
  auto a = run_cam(salient::eigencam);
  auto act = smallcnn().forward(reference()["input"], {"features.10"}).taps[0];
  at::Tensor mean_map = act.mean(1);
  for (int64_t i = 0; i < 4; ++i) {
    at::Tensor m = mean_map[i] - mean_map[i].mean();
    EXPECT_GE((a.raw[i][0] * m).sum().item<double>(), 0) << i;
  }
}

TEST(ReferenceParity, CaptumInputXGradientGuidedBackpropAndDeconvolution) {
  const auto& x = reference()["input"];
  EXPECT_TRUE(matches_reference(salient::input_x_gradient(smallcnn(), x, reference_targets()).map,
                                "captum_input_x_gradient"));
  EXPECT_TRUE(matches_reference(salient::guided_backprop(smallcnn(), x, reference_targets()).map,
                                "captum_guided_backprop"));
  EXPECT_TRUE(matches_reference(salient::deconvnet(smallcnn(), x, reference_targets()).map, "captum_deconvolution"));
}

TEST(ReferenceParity, CaptumIntegratedGradientsGaussLegendreAndTrapezoidWithDeltas) {
  const auto& x = reference()["input"];
  auto o = salient::IntegratedGradientsOptions().n_steps(32);
  auto gl = salient::integrated_gradients(smallcnn(), x, reference_targets(), o);
  EXPECT_TRUE(matches_reference(gl.map, "captum_ig_gausslegendre"));
  EXPECT_TRUE(matches_reference(gl.delta, "captum_ig_gausslegendre_delta"));
  // Captum's trapezoid (weights 1/n, summing to (n-1)/n) is offered as an option.
  auto tr = salient::integrated_gradients(
      smallcnn(), x, reference_targets(),
      salient::IntegratedGradientsOptions(o).integration(salient::Integration::RiemannTrapezoidCaptum));
  EXPECT_TRUE(matches_reference(tr.map, "captum_ig_riemann_trapezoid"));
  EXPECT_TRUE(matches_reference(tr.delta, "captum_ig_riemann_trapezoid_delta"));
  // Chunked by a small memory budget: the same numbers.
  auto small = salient::integrated_gradients(
      smallcnn(), x, reference_targets(),
      salient::IntegratedGradientsOptions(o).memory_budget(5 * smallcnn().bytes_per_sample({3, 64, 64})));
  EXPECT_TRUE(matches_reference(small.map, "captum_ig_gausslegendre"));
}

TEST(IntegratedGradients, StepsNearTheBaselineRunTheOwnGraphAndTheRestTheFoldedCopy) {
  const auto& x = reference()["input"];
  // A fresh model: the copies it builds show which graph each step ran.
  Model model = Model::load(data("reference/smallcnn_traced.pt"));
  auto has_folded = [&] {
    auto names = model.frozen_copies();
    return std::find(names.begin(), names.end(), "folded") != names.end();
  };
  // riemann_left: alpha 0 runs the own graph; with 10 steps, so does 0.1 (0.099999994
  // as float32), and 0.2 .. 0.9 run the folded copy.
  auto o = salient::IntegratedGradientsOptions().n_steps(1).integration(salient::Integration::RiemannLeft);
  salient::integrated_gradients(model, x, reference_targets(), o);  // alpha 0 only
  EXPECT_FALSE(has_folded());
  auto o10 = salient::IntegratedGradientsOptions(o).n_steps(10);
  auto a = salient::integrated_gradients(model, x, reference_targets(), o10);
  EXPECT_TRUE(has_folded());
  // The same sum as every step on the model's own graph, up to rounding.
  at::Tensor base = at::zeros_like(x), total = at::zeros_like(x);
  auto q = salient::quadrature(salient::Integration::RiemannLeft, 10);
  for (size_t k = 0; k < q.alphas.size(); ++k) {
    at::Tensor leaf = (base + static_cast<float>(q.alphas[k]) * x).requires_grad_(true);
    auto fr = model.forward(leaf, {}, salient::Autograd::Full);
    at::Tensor s = reference_targets().scores(fr.output, a.targets, salient::Score::Logit);
    total += static_cast<float>(q.weights[k]) * torch::autograd::grad({s.sum()}, {leaf})[0];
  }
  at::Tensor own = total * x;
  EXPECT_TRUE(close(a.map, own, 1e-5 * own.abs().max().item<double>(), 1e-4));
}

TEST(ReferenceParity, QuadratureRulesAreCaptumsPointsAndWeights) {
  std::ifstream f(data("reference/manifest.json"));
  auto m = nlohmann::json::parse(f);
  for (const auto& e : m["tensors"]) {
    std::string name = e["name"];
    if (name != "captum_ig_gausslegendre" && name != "captum_ig_riemann_trapezoid") continue;
    auto q = salient::quadrature(name == "captum_ig_gausslegendre" ? salient::Integration::GaussLegendre
                                                                    : salient::Integration::RiemannTrapezoidCaptum,
                                 32);
    auto alphas = e["alphas"].get<std::vector<double>>(), steps = e["step_sizes"].get<std::vector<double>>();
    ASSERT_EQ(q.alphas.size(), 32u);
    for (size_t i = 0; i < 32; ++i) {
      EXPECT_NEAR(q.alphas[i], alphas[i], 1e-15) << name << " " << i;
      EXPECT_NEAR(q.weights[i], steps[i], 1e-15) << name << " " << i;
    }
  }
  // Textbook trapezoid weights sum to 1; every rule integrates a constant exactly.
  for (auto rule : {salient::Integration::RiemannLeft, salient::Integration::RiemannRight,
                    salient::Integration::RiemannMiddle, salient::Integration::RiemannTrapezoid,
                    salient::Integration::GaussLegendre}) {
    auto q = salient::quadrature(rule, 17);
    double sum = 0;
    for (double w : q.weights) sum += w;
    EXPECT_NEAR(sum, 1.0, 1e-12) << salient::to_string(rule);
  }
}

TEST(ReferenceParity, NoiseTunnelSmoothGradSquaredAndVarGradWithTheStoredNoise) {
  const auto& ref = reference();
  at::Tensor noise = ref["smoothgrad_noise"];
  auto o = salient::SmoothGradOptions().n_samples(noise.size(0)).noise(
      [&](int64_t s, const at::Tensor&, const at::Tensor&) { return noise[s]; });
  auto sq = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(),
                                salient::SmoothGradOptions(o).aggregation(salient::NoiseAggregation::MeanSquare));
  auto var = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(),
                                 salient::SmoothGradOptions(o).aggregation(salient::NoiseAggregation::Variance));
  EXPECT_TRUE(matches_reference(sq.map, "smoothgrad_sq"));
  EXPECT_TRUE(matches_reference(var.map, "vargrad"));
}

TEST(ReferenceParity, CaptumGuidedGradCamInOneForward) {
  auto a = salient::guided_gradcam(smallcnn(), reference()["input"], reference_targets(),
                                   salient::CamOptions().layer("features.10"));
  EXPECT_TRUE(matches_reference(a.map, "captum_guided_gradcam"));
  EXPECT_TRUE(matches_reference(a.raw, "captum_layer_gradcam_raw"));
  EXPECT_EQ(a.forward_samples, 4);
  EXPECT_EQ(a.backward_samples, 8);
}

TEST(ReferenceParity, CaptumOcclusionWithTheModelAsItIs) {
  auto a = salient::occlusion(smallcnn(), reference()["input"], reference_targets(),
                              salient::OcclusionOptions().window(8).stride(4).optimized(false));
  EXPECT_TRUE(matches_reference(a.map, "captum_occlusion"));
  EXPECT_EQ(a.forward_samples, 4 * (15 * 15 + 1));
  // The frozen, inference-optimised graph gives nearly the same map, faster.
  auto fast = salient::occlusion(smallcnn(), reference()["input"], reference_targets(),
                                 salient::OcclusionOptions().window(8).stride(4));
  EXPECT_TRUE(close(fast.map, reference()["captum_occlusion"], 2e-5, 1e-3));
}

TEST(Precision, Bf16RunsAFrozenBf16CopyCloseToFloat32AndLeavesTheModelAlone) {
  const Model& model = smallcnn();
  const at::Tensor& x = reference()["input"];
  at::Tensor f = model.infer(x), b = model.infer(x, salient::Precision::BFloat16);
  EXPECT_EQ(b.scalar_type(), at::kFloat);
  EXPECT_FALSE(at::equal(b, f));  // it did run in bf16
  // An 8-bit mantissa, and sums that cancel: logits within 5% of their largest (3.5% here).
  EXPECT_TRUE(close(b, f, 0.05 * f.abs().max().item<double>(), 0));
  EXPECT_TRUE(at::equal(b.argmax(1), f.argmax(1)));
  for (const auto& p : model.module().parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(model.infer(x), f));  // the float32 copy is untouched

  // Forward-only methods and metrics take it as an option; maps and AUCs stay close.
  auto opts = salient::OcclusionOptions().window(8).stride(4);
  at::Tensor m32 = salient::occlusion(model, x, reference_targets(), opts).map;
  at::Tensor m16 =
      salient::occlusion(model, x, reference_targets(), opts.precision(salient::Precision::BFloat16)).map;
  for (int64_t i = 0; i < x.size(0); ++i) {
    at::Tensor a = m32[i].flatten() - m32[i].mean(), c = m16[i].flatten() - m16[i].mean();
    EXPECT_GT((a * c).sum().item<double>() / (a.norm() * c.norm()).item<double>(), 0.98) << i;
  }
  auto curve = salient::PerturbationCurveOptions().step_fraction(0.05);
  at::Tensor d32 = salient::deletion(model, x, m32, reference_targets(), curve).auc;
  at::Tensor d16 =
      salient::deletion(model, x, m32, reference_targets(), curve.precision(salient::Precision::BFloat16)).auc;
  EXPECT_TRUE(close(d16, d32, 0.02, 0)) << d32 << d16;

  // bf16 exists only on the frozen copy: asking for it on the model as it is is an error.
  EXPECT_THROW(salient::occlusion(model, x, reference_targets(), opts.optimized(false)), salient::Error);
  EXPECT_THROW(salient::deletion(model, x, m32, reference_targets(), curve.optimized(false)), salient::Error);
  EXPECT_EQ(salient::parse_precision("bf16"), salient::Precision::BFloat16);
  EXPECT_THROW(salient::parse_precision("half"), salient::Error);
}

TEST(ReferenceParity, PytorchGradCamScoreCamWithTheModelAsItIs) {
  auto a = salient::scorecam(smallcnn(), reference()["input"], reference_targets(),
                             salient::ScoreCamOptions().layer("features.10").optimized(false));
  EXPECT_TRUE(matches_reference(a.weights, "pgc_scorecam_weights"));
  EXPECT_TRUE(matches_reference(a.raw.squeeze(1), "pgc_scorecam_raw"));
  EXPECT_TRUE(matches_reference(salient::render::pytorch_grad_cam_scale(a.raw, 64, 64), "pgc_scorecam"));
  EXPECT_EQ(a.forward_samples, 4 + 4 * 64);
}

TEST(ReferenceParity, PytorchGradCamAblationCamRunningOnlyTheLayersAfter) {
  auto a = salient::ablationcam(smallcnn(), reference()["input"], reference_targets(),
                                salient::AblationCamOptions().layer("features.10"));
  EXPECT_TRUE(matches_reference(a.weights, "pgc_ablationcam_weights"));
  EXPECT_TRUE(matches_reference(a.raw.squeeze(1), "pgc_ablationcam_raw"));
  EXPECT_TRUE(matches_reference(salient::render::pytorch_grad_cam_scale(a.raw, 64, 64), "pgc_ablationcam"));
}

TEST(ReferenceParity, PytorchGradCamFullGradWithEffectiveBatchNormBias) {
  std::vector<std::string> paths;
  for (const auto& l : smallcnn().bias_layers()) paths.push_back(l.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"features.0", "features.1", "features.4", "features.5", "features.8",
                                             "features.9"}));
  auto a = salient::fullgrad(smallcnn(), reference()["input"], reference_targets());
  ASSERT_EQ(a.map.sizes(), (std::vector<int64_t>{4, 1, 64, 64}));
  EXPECT_EQ(a.forward_samples, 4);
  EXPECT_EQ(a.backward_samples, 4);
  // pytorch-grad-cam's last step: per-image min-max with eps 1e-7, no resize.
  at::Tensor flat = a.map.flatten(1);
  flat = flat - flat.amin(1, true);
  at::Tensor scaled = (flat / (flat.amax(1, true) + 1e-7)).view({4, 64, 64});
  EXPECT_TRUE(matches_reference(scaled, "pgc_fullgrad"));
}

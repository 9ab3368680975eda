// Metrics on hand-checked tiny cases: exact curves and AUCs, pointing and energy on known
// boxes, rank correlation and SSIM identities, and the cascading randomisation.
#include <ATen/Parallel.h>

#include "helpers.hpp"
#include "salient/metrics.hpp"

using namespace testing_salient;
using salient::Box;
using salient::Model;
using salient::Target;

TEST(Deletion, LinearModelCurveAndAucByHand) {
  // One class, score = 4 x0 + 3 x1 + 2 x2 + 1 x3 on a 2x2 image of ones.
  auto model = Model::from_module(linear_model(at::tensor({4.f, 3.f, 2.f, 1.f}).view({1, 4}), at::zeros({1})), "lin");
  at::Tensor x = at::ones({1, 1, 2, 2});
  at::Tensor map = at::tensor({4.f, 3.f, 2.f, 1.f}).view({1, 1, 2, 2});
  auto o = salient::PerturbationCurveOptions().step_pixels(1).score(salient::Score::Logit);
  auto c = salient::deletion(model, x, map, Target::index(0), o);
  EXPECT_TRUE(close(c.scores[0], at::tensor({10.f, 6.f, 3.f, 1.f, 0.f}), 1e-5, 1e-6)) << c.scores;
  EXPECT_TRUE(close(c.fraction, at::tensor({0.f, 0.25f, 0.5f, 0.75f, 1.f}), 1e-7, 0));
  EXPECT_NEAR(c.auc[0].item<double>(), 0.25 * (8 + 4.5 + 2 + 0.5), 1e-5);
  // The reversed order deletes the small weights first: a worse (higher) AUC.
  auto worse = salient::deletion(model, x, -map, Target::index(0), o.reduce(salient::ChannelReduce::Sum));
  EXPECT_NEAR(worse.auc[0].item<double>(), 0.25 * (9.5 + 8 + 5.5 + 2), 1e-5);
  // Mean substrate: each deleted pixel becomes the image mean (1 here): nothing changes.
  auto same = salient::deletion(model, x, map, Target::index(0), o.substrate(salient::Substrate::Mean));
  EXPECT_TRUE(close(same.scores[0], at::full({5}, 10.f), 1e-5, 0));
}

TEST(Deletion, TheTrueMaskBeatsRandomMapsAndInsertionMirrorsIt) {
  // A bright 3x3 object on a dark 8x8 image; logit 0 = object pixels - 0.3 background
  // pixels - 4, so the object must be sharp (blurring spreads it onto the background).
  const int64_t s = 8;
  at::Tensor mask = at::zeros({s, s});
  mask.slice(0, 2, 5).slice(1, 3, 6).fill_(1);
  at::Tensor w = at::stack({mask.flatten() * 1.3 - 0.3, at::zeros({s * s})});
  auto model = Model::from_module(linear_model(w, at::tensor({-4.f, 0.f})), "lin");
  at::manual_seed(3);
  at::Tensor x = (mask + 0.05 * at::rand({s, s})).view({1, 1, s, s});
  at::Tensor truth = mask.view({1, 1, s, s});
  auto o = salient::PerturbationCurveOptions().step_pixels(2);
  auto del = salient::deletion(model, x, truth, Target::index(0), o);
  auto ins = salient::insertion(model, x, truth, Target::index(0), o);
  for (int i = 0; i < 20; ++i) {
    at::Tensor r = at::rand({1, 1, s, s});
    EXPECT_LT(del.auc[0].item<double>(), salient::deletion(model, x, r, Target::index(0), o).auc[0].item<double>()) << i;
    EXPECT_GT(ins.auc[0].item<double>(), salient::insertion(model, x, r, Target::index(0), o).auc[0].item<double>()) << i;
  }
  // Insertion runs from the blurred image's score to the clean image's; deletion the other way.
  at::Tensor blurred = salient::gaussian_blur(x, 11, 5.0);
  const double p_clean = at::softmax(model.predict(x), 1)[0][0].item<double>();
  EXPECT_NEAR(ins.scores[0][0].item<double>(), at::softmax(model.predict(blurred), 1)[0][0].item<double>(), 1e-5);
  EXPECT_NEAR(ins.scores[0][-1].item<double>(), p_clean, 1e-5);
  EXPECT_NEAR(del.scores[0][0].item<double>(), p_clean, 1e-5);
  EXPECT_LT(ins.scores[0][0].item<double>(), 0.1);
}

TEST(Deletion, ConstantMapFollowsRasterOrderAndBatchedEqualsPerSample) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"].narrow(0, 0, 2);
  at::Tensor flat = at::zeros({2, 1, 64, 64});
  auto o = salient::PerturbationCurveOptions().step_fraction(0.1);
  auto c = salient::deletion(model, x, flat, Target::per_sample({0, 1}), o);
  EXPECT_TRUE(at::isfinite(c.auc).all().item<bool>());
  EXPECT_EQ(c.scores.size(1), 11);  // ceil(4096 / 410) = 10 steps + the clean image
  at::Tensor gc = salient::gradcam(model, x, Target::per_sample({0, 1})).map;
  auto both = salient::deletion(model, x, gc, Target::per_sample({0, 1}), o);
  for (int64_t i = 0; i < 2; ++i) {
    auto one = salient::deletion(model, x.narrow(0, i, 1), gc.narrow(0, i, 1), Target::index(i), o);
    EXPECT_TRUE(close(one.scores[0], both.scores[i], 1e-6, 1e-4)) << i;
  }
  EXPECT_NE(msg_of([&] { salient::deletion(model, x, at::zeros({2, 1, 32, 32}), Target::index(0)); })
                .find("does not fit the input"),
            std::string::npos);
  // One channel or the input's three: a 2-channel tensor is no map of this input.
  EXPECT_NE(msg_of([&] { salient::road(model, x, at::zeros({2, 2, 64, 64}), Target::index(0)); })
                .find("road: map [2, 2, 64, 64] does not fit the input [2, 3, 64, 64]"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { salient::pointing_hit(at::Tensor(), {0, 0, 1, 1}); }).find("must be [C,H,W] or [H,W], got undefined"),
            std::string::npos);
}

TEST(PointingGame, PeakInsideOrWithinToleranceHitsConstantMapMisses) {
  at::Tensor m = at::zeros({224, 224});
  const Box box{100, 100, 120, 110};  // x0, y0, x1, y1
  m[105][110] = 1;                     // inside
  EXPECT_TRUE(salient::pointing_hit(m, box));
  m.zero_();
  m[105][135] = 1;  // 15 px right of x1: within the default 15 px at 224
  EXPECT_TRUE(salient::pointing_hit(m, box));
  m.zero_();
  m[105][136] = 1;  // 16 px
  EXPECT_FALSE(salient::pointing_hit(m, box));
  EXPECT_TRUE(salient::pointing_hit(m, box, 16.0));
  m.zero_();
  m[121][131] = 1;  // 11 down, 11 right: sqrt(242) = 15.6 > 15
  EXPECT_FALSE(salient::pointing_hit(m, box));
  EXPECT_FALSE(salient::pointing_hit(at::ones({224, 224}), box));  // no peak to point with
  // Tolerance scales with the map: 15 * 112 / 224 = 7.5 px at 112x112.
  at::Tensor small = at::zeros({112, 112});
  small[50][67] = 1;
  EXPECT_TRUE(salient::pointing_hit(small, {50, 50, 60, 60}));
  small.zero_();
  small[50][68] = 1;
  EXPECT_FALSE(salient::pointing_hit(small, {50, 50, 60, 60}));
  // Masks: the distance to the nearest object pixel.
  at::Tensor mask = at::zeros({224, 224}, at::kByte);
  mask[10][10] = 1;
  m.zero_();
  m[10][25] = 1;
  EXPECT_TRUE(salient::pointing_hit_mask(m, mask));
  EXPECT_NE(msg_of([&] { salient::pointing_hit(m, {300, 0, 310, 5}); }).find("outside"), std::string::npos);
  EXPECT_NE(msg_of([&] { salient::pointing_hit(m, box, std::nan("")); }).find("tolerance is NaN"), std::string::npos);
}

TEST(EnergyPointingGame, ShareOfThePositiveMapInsideTheBox) {
  at::Tensor m = at::zeros({1, 10, 10});
  m[0].slice(0, 2, 4).slice(1, 2, 4).fill_(1);  // 4 pixels in the box
  m[0][9][9] = 1;                               // 1 outside
  m[0][0][0] = -5;                              // negative evidence is not energy
  EXPECT_NEAR(salient::energy_in_box(m, {2, 2, 3, 3}, salient::ChannelReduce::Sum), 0.8, 1e-12);
  EXPECT_NEAR(salient::energy_in_box(at::ones({10, 10}), {0, 0, 4, 1}), 0.1, 1e-12);  // constant: the box's area
  EXPECT_EQ(salient::energy_in_box(at::zeros({10, 10}), {0, 0, 4, 1}), 0.0);           // nothing positive: 0
  at::Tensor mask = at::zeros({10, 10}, at::kByte);
  mask.slice(0, 2, 4).slice(1, 2, 4).fill_(1);
  EXPECT_NEAR(salient::energy_in_mask(m, mask, salient::ChannelReduce::Sum), 0.8, 1e-12);
}

TEST(Similarity, SpearmanWithTiesAndSsimIdentities) {
  at::Tensor a = at::tensor({1.0, 2.0, 3.0, 4.0});
  EXPECT_NEAR(salient::spearman(a, a * 10 + 3), 1.0, 1e-12);
  EXPECT_NEAR(salient::spearman(a, -a), -1.0, 1e-12);
  EXPECT_EQ(salient::spearman(a, at::ones({4})), 0.0);
  // Ties get their mean rank: ranks (1.5, 1.5, 3) vs (1, 2, 3): r = 0.866...
  EXPECT_NEAR(salient::spearman(at::tensor({5.0, 5.0, 7.0}), at::tensor({1.0, 2.0, 3.0})), std::sqrt(3.0) / 2, 1e-12);
  EXPECT_NE(msg_of([&] { salient::spearman(at::tensor({1.0, NAN, 2.0}), at::tensor({1.0, 2.0, 3.0})); })
                .find("non-finite"),
            std::string::npos);
  at::Tensor img = at::rand({32, 32});
  EXPECT_NEAR(salient::ssim(img, img), 1.0, 1e-9);
  EXPECT_NEAR(salient::ssim(img, img * 3 + 1), 1.0, 1e-9);  // both are min-max normalised first
  EXPECT_LT(salient::ssim(img, at::rand({32, 32})), 0.2);
}

TEST(Sanity, RandomizedCopiesLeaveTheModelAloneAndGradCamDecorrelates) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  EXPECT_EQ(model.parameter_blocks(), (std::vector<std::string>{"features.0", "features.1", "features.4", "features.5",
                                                                 "features.8", "features.9", "fc"}));
  std::vector<at::Tensor> before;
  for (const auto& p : model.module().parameters()) before.push_back(p.clone());
  Model r = model.randomized({"fc"}, 7);
  size_t i = 0;
  for (const auto& p : model.module().parameters()) EXPECT_TRUE(at::equal(p, before[i++]));
  at::Tensor x = reference()["input"];
  EXPECT_FALSE(at::allclose(r.predict(x), model.predict(x)));
  // Same seed, same copy.
  EXPECT_TRUE(at::equal(model.randomized({"fc"}, 7).predict(x), r.predict(x)));
  // A copy shares the tensors it does not re-draw; re-drawing in a copy of the copy
  // leaves both earlier models as they were.
  auto param = [](const Model& m, const char* sub, const char* name) {
    auto owner = sub[0] ? m.module().attr("features").toModule().attr(sub).toModule() : m.module().attr("fc").toModule();
    return owner.attr(name).toTensor();
  };
  EXPECT_TRUE(param(r, "0", "weight").is_same(param(model, "0", "weight")));
  Model r2 = r.randomized({"features.0"}, 8);
  EXPECT_FALSE(at::equal(param(r2, "0", "weight"), param(model, "0", "weight")));
  EXPECT_TRUE(at::equal(param(r, "0", "weight"), before[0]));
  EXPECT_TRUE(param(r2, "", "weight").is_same(param(r, "", "weight")));
  EXPECT_TRUE(at::equal(r.predict(x), model.randomized({"fc"}, 7).predict(x)));

  auto gradcam = [](const Model& m, const at::Tensor& xx, const Target& t) {
    return salient::gradcam(m, xx, t, salient::GradCamOptions().layer("features.10"));
  };
  auto curve = salient::cascading_randomization(model, x, gradcam, Target::per_sample({0, 1, 2, 3}));
  ASSERT_EQ(curve.blocks.front(), "fc");
  ASSERT_EQ(curve.spearman_abs.sizes(), (std::vector<int64_t>{7, 4}));
  EXPECT_TRUE((curve.spearman_abs.abs() <= 1).all().item<bool>());
  // With every block re-drawn, the map no longer follows the original.
  EXPECT_LT(curve.spearman_abs[-1].mean().item<double>(), 0.5) << curve.spearman_abs;
}

TEST(Infidelity, ExactForALinearModelsGradientAndScaleFreeWhenNormalised) {
  at::Tensor w = at::randn({3, 2 * 4 * 4}), b = at::randn({3});
  auto model = Model::from_module(linear_model(w, b), "lin");
  at::Tensor x = at::randn({2, 2, 4, 4});
  auto t = Target::per_sample({0, 2});
  at::Tensor g = salient::vanilla_gradient(model, x, t).map;
  // F(x) - F(x - I) = w·I exactly: the gradient has zero infidelity.
  at::Tensor inf = salient::infidelity(model, x, g, t, salient::InfidelityOptions().noise_std(0.1));
  EXPECT_LT(inf.max().item<double>(), 1e-9) << inf;
  // Half the gradient: E[(w·I/2)^2] = sigma^2 |w|^2 / 4 in expectation; normalised, 0 again.
  at::Tensor half = salient::infidelity(model, x, g * 0.5, t, salient::InfidelityOptions().noise_std(0.1).n_perturb(400));
  for (int64_t i = 0; i < 2; ++i) {
    const double expected = 0.01 * w[i == 0 ? 0 : 2].pow(2).sum().item<double>() / 4;
    EXPECT_NEAR(half[i].item<double>(), expected, 0.25 * expected) << i;
  }
  at::Tensor norm = salient::infidelity(model, x, g * 0.5, t, salient::InfidelityOptions().noise_std(0.1).normalize(true));
  EXPECT_LT(norm.max().item<double>(), 1e-9);
  // The frozen graph (default) and the module's own forward agree; a predicted target is
  // the clean input's class.
  auto eager = salient::InfidelityOptions().noise_std(0.1).n_perturb(400).optimized(false);
  EXPECT_TRUE(close(salient::infidelity(model, x, g * 0.5, t, eager), half, 1e-9, 1e-4));
  const auto predicted = to_vector(model.predict(x).argmax(1));
  EXPECT_TRUE(at::equal(salient::infidelity(model, x, g, Target::predicted()),
                        salient::infidelity(model, x, g, Target::per_sample(predicted))));
  EXPECT_NE(msg_of([&] { salient::infidelity(model, x, g.narrow(0, 0, 1), t); }).find("does not fit the input"),
            std::string::npos);
  // A non-finite map is an error, not a NaN score.
  for (double bad : {std::nan(""), double(INFINITY)}) {
    at::Tensor gb = g.clone();
    gb.view(-1)[3] = bad;
    EXPECT_NE(msg_of([&] { salient::infidelity(model, x, gb, t); }).find("infidelity: non-finite values (NaN or Inf) in the map"),
              std::string::npos);
  }
}

TEST(MaxSensitivity, ZeroForAConstantGradientBoundedForInputTimesGradient) {
  at::Tensor w = at::randn({2, 3 * 2 * 2}), b = at::zeros({2});
  auto model = Model::from_module(linear_model(w, b), "lin");
  at::Tensor x = at::randn({1, 3, 2, 2});
  auto vanilla = [](const Model& m, const at::Tensor& xx, const Target& t) { return salient::vanilla_gradient(m, xx, t); };
  auto ixg = [](const Model& m, const at::Tensor& xx, const Target& t) { return salient::input_x_gradient(m, xx, t); };
  EXPECT_EQ(salient::max_sensitivity(model, x, vanilla, Target::index(1)).item<double>(), 0.0);
  // x*w changes by delta*w: at most radius * |w| / |x * w|.
  const double s = salient::max_sensitivity(model, x, ixg, Target::index(1)).item<double>();
  const double bound = 0.02 * w[1].norm().item<double>() / (x.flatten() * w[1]).norm().item<double>();
  EXPECT_GT(s, 0.0);
  EXPECT_LE(s, bound * (1 + 1e-6));
  // The perturbed copies go through the method in batches; one per call gives the same.
  auto cnn = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor xs = reference()["input"].narrow(0, 0, 2);
  auto t = Target::per_sample({1, 2});
  at::Tensor all = salient::max_sensitivity(cnn, xs, vanilla, t);
  for (int64_t per : {1, 3})
    EXPECT_TRUE(close(salient::max_sensitivity(cnn, xs, vanilla, t, salient::SensitivityOptions().perturbations_per_batch(per)),
                      all, 1e-9, 1e-4))
        << per;
  EXPECT_NE(msg_of([&] {
              salient::max_sensitivity(cnn, xs, vanilla, t, salient::SensitivityOptions().perturbations_per_batch(0));
            }).find("perturbations_per_batch must be >= 1"),
            std::string::npos);
  // A method whose map turns NaN on the perturbed inputs is named, not scored NaN.
  auto nan_on_perturbed = [&](const Model& m, const at::Tensor& xx, const Target& tt) {
    auto a = salient::vanilla_gradient(m, xx, tt);
    if (!at::equal(xx, xs)) a.map.view(-1)[0] = std::nan("");
    return a;
  };
  EXPECT_NE(msg_of([&] { salient::max_sensitivity(cnn, xs, nan_on_perturbed, t); })
                .find("max_sensitivity: non-finite values (NaN or Inf) in the explanation of a perturbed input"),
            std::string::npos);
}

namespace {

// Rong et al.'s system written out densely, as their reference code sets it up: for each
// removed pixel, (sum of in-image neighbour weights) v_i - sum over removed neighbours
// w v_j = sum over known neighbours w x_k.
at::Tensor dense_imputation(const at::Tensor& img, const at::Tensor& removed) {
  const int64_t h = img.size(0), w = img.size(1);
  std::vector<int64_t> index(h * w, -1), cells;
  for (int64_t i = 0; i < h * w; ++i)
    if (removed.flatten()[i].item<bool>()) index[i] = static_cast<int64_t>(cells.size()), cells.push_back(i);
  const int64_t m = static_cast<int64_t>(cells.size());
  at::Tensor a = at::zeros({m, m}, at::kDouble), b = at::zeros({m}, at::kDouble);
  at::Tensor v = img.to(at::kDouble).flatten();
  for (int64_t e = 0; e < m; ++e) {
    const int64_t y = cells[e] / w, x = cells[e] % w;
    for (int64_t dy = -1; dy <= 1; ++dy)
      for (int64_t dx = -1; dx <= 1; ++dx) {
        if ((dy == 0 && dx == 0) || y + dy < 0 || y + dy >= h || x + dx < 0 || x + dx >= w) continue;
        const double wt = (dy == 0 || dx == 0) ? 1.0 / 6 : 1.0 / 12;
        const int64_t q = (y + dy) * w + x + dx;
        a[e][e] += wt;
        if (index[q] >= 0)
          a[e][index[q]] -= wt;
        else
          b[e] += wt * v[q].item<double>();
      }
  }
  at::Tensor sol = at::linalg_solve(a, b);
  at::Tensor out = v.clone();
  for (int64_t e = 0; e < m; ++e) out[cells[e]] = sol[e];
  return out.view({h, w}).to(at::kFloat);
}

}  // namespace

TEST(Road, ImputationSolvesRongsSystemAndKeepsLinearRampsExact) {
  // A linear ramp is reproduced exactly where no removed pixel touches the border (the
  // symmetric weights average a linear function to its centre).
  at::Tensor ramp = (at::arange(12).view({1, 12}) * 0.5 + at::arange(12).view({12, 1}) * 0.25 - 1).to(at::kFloat);
  at::Tensor hole = at::zeros({1, 12, 12}, at::kBool);
  hole.slice(1, 3, 9).slice(2, 2, 7).fill_(true);
  at::Tensor out = salient::noisy_linear_imputation(ramp.view({1, 1, 12, 12}), hole, /*noise=*/0);
  EXPECT_TRUE(close(out[0][0], ramp, 1e-4, 0));  // the solver stops at relative residual 1e-5
  // Irregular removed sets touching the border, on a random 3-channel image: each channel
  // equals the dense solution of the system; known pixels are kept as they were.
  at::manual_seed(5);
  at::Tensor img = at::rand({1, 3, 19, 23});
  at::Tensor removed = at::rand({1, 19, 23}) < 0.7;
  removed[0][0][0] = true;
  at::Tensor filled = salient::noisy_linear_imputation(img, removed, 0);
  for (int64_t c = 0; c < 3; ++c)
    EXPECT_TRUE(close(filled[0][c], dense_imputation(img[0][c], removed[0]), 1e-4, 0)) << c;
  // The channels share the passes over the matrix but iterate on their own: solving one
  // alone gives the same bits.
  for (int64_t c = 0; c < 3; ++c)
    EXPECT_TRUE(at::equal(salient::noisy_linear_imputation(img.narrow(1, c, 1), removed, 0)[0][0], filled[0][c])) << c;
  // Noise: N(0, 0.01^2) at removed pixels only.
  at::Tensor noisy = salient::noisy_linear_imputation(img, removed, 0.01, 3);
  at::Tensor diff = (noisy - filled)[0];
  at::Tensor at_removed = diff.masked_select(removed.expand({3, 19, 23}));
  EXPECT_NEAR(at_removed.std().item<double>(), 0.01, 0.001);
  EXPECT_EQ(diff.masked_select(~removed.expand({3, 19, 23})).abs().max().item<float>(), 0.f);
  EXPECT_NE(msg_of([&] { salient::noisy_linear_imputation(img, at::ones({1, 19, 23}), 0); }).find("every pixel removed"),
            std::string::npos);
}

TEST(Road, ImputationIsExactThroughEveryLevelAndEachRowIsSolvedAsIfAlone) {
  // 40x52 runs the multigrid on four levels (40x52, 21x27, 11x14, 6x8). One batch, one
  // thread, so the rows share a workspace, largest first: a disc with scattered pixels, a
  // band along the bottom border (its rows only), a single corner pixel. Each row equals
  // its dense solution and, bit for bit, the same row imputed alone.
  const int64_t h = 40, w = 52;
  at::manual_seed(11);
  at::Tensor img = at::rand({3, 3, h, w});
  at::Tensor yy = at::arange(h).view({h, 1}).expand({h, w}), xx = at::arange(w).view({1, w}).expand({h, w});
  at::Tensor removed = at::zeros({3, h, w}, at::kBool);
  removed[0] = ((yy - 18).pow(2) + (xx - 25).pow(2) < 144) | (at::rand({h, w}) < 0.15);
  removed[1].slice(0, 32, h).fill_(true);
  removed[2][0][0] = true;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  at::Tensor filled = salient::noisy_linear_imputation(img, removed, 0);
  std::vector<at::Tensor> alone;
  for (int64_t r = 2; r >= 0; --r) alone.insert(alone.begin(), salient::noisy_linear_imputation(img.narrow(0, r, 1), removed.narrow(0, r, 1), 0)[0]);
  at::set_num_threads(threads);
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_TRUE(at::equal(filled[r], alone[r])) << r;
    for (int64_t c = 0; c < 3; ++c)
      EXPECT_TRUE(close(filled[r][c], dense_imputation(img[r][c], removed[r]), 1e-4, 0)) << r << " " << c;
  }
  // Any magnitude: the solve runs at unit scale, so 1e30 and 1e-30 times the image give the
  // same fill times that factor.
  for (double factor : {1e30, 1e-30}) {
    at::Tensor scaled = salient::noisy_linear_imputation(img.narrow(0, 0, 1) * factor, removed.narrow(0, 0, 1), 0);
    EXPECT_TRUE(close(scaled[0] / factor, filled[0], 1e-5, 1e-5)) << factor;
  }
  // Shapes at the ends of the hierarchy: 5x7 is solved by Cholesky alone, a 1x90 strip
  // coarsens along its length only.
  for (auto [sh, sw] : {std::pair<int64_t, int64_t>{5, 7}, {1, 90}}) {
    at::Tensor small = at::rand({1, 1, sh, sw});
    at::Tensor holes = at::rand({1, sh, sw}) < 0.6;
    holes[0][0][sw / 2] = true;
    holes[0][sh - 1][0] = false;
    EXPECT_TRUE(close(salient::noisy_linear_imputation(small, holes, 0)[0][0], dense_imputation(small[0][0], holes[0]), 1e-4, 0))
        << sh << "x" << sw;
  }
}

TEST(Road, ImputationSolvesSetsWhoseCoarseSystemIsOnlySemiDefinite) {
  // An unknown with no unknown neighbour at odd coordinates is interpolated from four
  // coarse points, which then share it alone: their Galerkin system is singular (the
  // coarsest level of 12x12 is 7x7, solved directly). Scattered sets, dense ones and a
  // checkerboard of such pixels each equal their dense solution, finite everywhere.
  const int64_t s = 12;
  at::manual_seed(21);
  at::Tensor img = at::rand({4, 1, s, s});
  at::Tensor removed = at::zeros({4, s, s}, at::kBool);
  for (int64_t y = 1; y < s; y += 4)
    for (int64_t x = 1; x < s; x += 4) removed[0][y][x] = true;
  removed[1] = at::rand({s, s}) < 0.1;
  removed[2] = at::rand({s, s}) < 0.9;
  removed[2][5][5] = false;
  for (int64_t y = 1; y < s; y += 2)
    for (int64_t x = 1; x < s; x += 2) removed[3][y][x] = true;
  at::Tensor filled = salient::noisy_linear_imputation(img, removed, 0);
  ASSERT_TRUE(at::isfinite(filled).all().item<bool>());
  for (int64_t r = 0; r < 4; ++r)
    EXPECT_TRUE(close(filled[r][0], dense_imputation(img[r][0], removed[r]), 1e-4, 0)) << r;
}

TEST(Road, TheTrueMaskBeatsRandomMapsBothWaysAndBatchedEqualsPerSample) {
  // A bright 4x4 object; logit 0 = sum of the object's pixels - 8. Removing the object
  // (MoRF) destroys the class evidence, keeping it to the end (LeRF) preserves it.
  const int64_t s = 12;
  at::Tensor mask = at::zeros({s, s});
  mask.slice(0, 3, 7).slice(1, 5, 9).fill_(1);
  at::Tensor w = at::stack({mask.flatten(), at::zeros({s * s})});
  auto model = Model::from_module(linear_model(w, at::tensor({-8.f, 0.f})), "lin");
  at::manual_seed(3);
  at::Tensor x = (mask + 0.05 * at::rand({s, s})).view({1, 1, s, s});
  at::Tensor truth = mask.view({1, 1, s, s}) + 0.01 * at::rand({1, 1, s, s});
  auto r = salient::road(model, x, truth, Target::index(0));
  ASSERT_EQ(r.morf.sizes(), (at::IntArrayRef{1, 9}));
  // MoRF at 20% already covers the 16 object pixels (29 removed): the score is gone.
  EXPECT_LT(r.morf[0][1].item<double>(), 0.05);
  // LeRF up to 80% keeps the object (115 removed, 29 left): it is still recognised.
  EXPECT_GT(r.lerf[0][7].item<double>(), 0.9);
  for (int i = 0; i < 10; ++i) {
    auto random = salient::road(model, x, at::rand({1, 1, s, s}), Target::index(0));
    EXPECT_LT(r.morf_mean[0].item<double>(), random.morf_mean[0].item<double>()) << i;
    EXPECT_GT(r.lerf_mean[0].item<double>(), random.lerf_mean[0].item<double>()) << i;
    EXPECT_GT(r.combined[0].item<double>(), random.combined[0].item<double>()) << i;
  }
  EXPECT_NEAR(r.combined[0].item<double>(), (r.lerf_mean[0] - r.morf_mean[0]).item<double>() / 2, 1e-7);
  EXPECT_EQ(r.forward_samples, 18);  // 9 fractions x 2 orders, explicit target: no probe

  auto cnn = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor xs = reference()["input"].narrow(0, 0, 2);
  at::Tensor gc = salient::gradcam(cnn, xs, Target::per_sample({0, 1})).map;
  auto o = salient::RoadOptions().fractions({0.25, 0.5, 0.75});
  auto both = salient::road(cnn, xs, gc, Target::per_sample({0, 1}), o);
  for (int64_t i = 0; i < 2; ++i) {
    auto one = salient::road(cnn, xs.narrow(0, i, 1), gc.narrow(0, i, 1), Target::index(i), o);
    EXPECT_TRUE(close(one.morf[0], both.morf[i], 1e-6, 1e-4)) << i;
    EXPECT_TRUE(close(one.lerf[0], both.lerf[i], 1e-6, 1e-4)) << i;
  }
  // A constant map removes pixels in raster order: defined and finite, never NaN.
  auto flat = salient::road(cnn, xs, at::zeros({2, 1, 64, 64}), Target::per_sample({0, 1}), o);
  EXPECT_TRUE(at::isfinite(flat.combined).all().item<bool>());
  EXPECT_NE(msg_of([&] { salient::road(cnn, xs, gc, Target::index(0), salient::RoadOptions().fractions({0.5, 1.0})); })
                .find("fractions must lie in (0, 1)"),
            std::string::npos);
}

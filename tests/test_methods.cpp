#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <limits>

#include "helpers.hpp"
#include "methods/common.hpp"

using namespace testing_salient;
using salient::Model;
using salient::Target;

namespace {


// Every method of the registry, run once with small settings: used by the invariance tests.
std::vector<std::pair<std::string, std::function<salient::Attribution(const Model&, const at::Tensor&)>>>
all_methods() {
  salient::ExplainSettings s;
  s.n_steps = 4;
  s.samples = 3;
  s.masks = 24;
  s.window = 8;
  s.stride = 8;
  s.top_k = 4.0;
  s.base = "input_x_gradient";
  std::vector<std::pair<std::string, std::function<salient::Attribution(const Model&, const at::Tensor&)>>> out;
  for (const auto& m : salient::methods())
    out.emplace_back(m.name, [name = m.name, s](const Model& model, const at::Tensor& x) {
      return salient::explain(model, x, name, Target::predicted(), s);
    });
  return out;
}

}  // namespace

TEST(VanillaGradient, LinearModelGradientIsItsWeightRowForEachSamplesTarget) {
  at::Tensor w = at::randn({4, 2 * 3 * 3}), b = at::randn({4});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({3, 2, 3, 3});
  auto a = salient::vanilla_gradient(model, x, Target::per_sample({2, 0, 3}));
  ASSERT_EQ(a.map.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(a.map[0], w[2].view({2, 3, 3})));
  EXPECT_TRUE(at::equal(a.map[1], w[0].view({2, 3, 3})));
  EXPECT_TRUE(at::equal(a.map[2], w[3].view({2, 3, 3})));
  EXPECT_EQ(to_vector(a.targets), (std::vector<int64_t>{2, 0, 3}));
}

TEST(VanillaGradient, ProbabilityScoreIsTheSoftmaxJacobianRow) {
  at::Tensor w = at::randn({3, 4}), b = at::zeros({3});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({1, 4, 1, 1});
  auto a = salient::vanilla_gradient(model, x, Target::index(1),
                                     salient::VanillaOptions().score(salient::Score::Probability));
  at::Tensor p = at::softmax(at::matmul(x.flatten(1), w.t()), 1)[0];
  // d p1 / dx = p1 * (w1 - sum_k p_k w_k)
  at::Tensor expected = p[1] * (w[1] - (p.unsqueeze(1) * w).sum(0));
  EXPECT_TRUE(close(a.map.flatten(), expected, 1e-7, 1e-5));
}

TEST(VanillaGradient, ProbabilityOfASingleLogitIsItsSigmoid) {
  // A binary classifier's one logit: a softmax over one class is 1 whatever the input,
  // its gradient 0; the sigmoid is the probability such a model gives.
  at::Tensor w = at::randn({1, 4}), b = at::full({1}, 0.3);
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({2, 4, 1, 1});
  auto a = salient::vanilla_gradient(model, x, Target::index(0),
                                     salient::VanillaOptions().score(salient::Score::Probability));
  at::Tensor p = at::sigmoid(at::matmul(x.flatten(1), w.t()) + b);  // [2, 1]
  EXPECT_TRUE(close(a.map.flatten(1), p * (1 - p) * w, 1e-7, 1e-5));  // d sigmoid(z) / dx = p (1 - p) w
  EXPECT_TRUE(at::allclose(salient::probabilities(at::tensor({0.0f, 2.0f}).view({2, 1})),
                           at::tensor({0.5f, 0.880797f}).view({2, 1})));
  EXPECT_TRUE(at::allclose(salient::probabilities(at::zeros({1, 2})), at::full({1, 2}, 0.5)));
  EXPECT_NE(msg_of([&] { salient::probabilities(at::zeros({3})); }).find("output must be [N, K], got [3]"),
            std::string::npos);
}

TEST(GradCam, OneConvModelEqualsHandComputedMap) {
  const int64_t c = 5, k = 3;
  at::Tensor cw = at::randn({c, 2, 3, 3}), cb = at::randn({c}), fw = at::randn({k, c});
  auto model = Model::from_module(one_conv_model(cw, cb, fw), "one_conv");
  at::Tensor x = at::randn({2, 2, 8, 10});
  auto a = salient::gradcam(model, x, Target::per_sample({1, 2}), salient::GradCamOptions().layer("conv"));
  // By hand: logit_t = sum_c V[t,c] mean(A_c), so d logit_t / d A_c = V[t,c] / (h w) everywhere.
  at::Tensor act = at::conv2d(x, cw, cb);  // [2, c, 6, 8]
  const double hw = 6.0 * 8.0;
  for (int64_t n = 0; n < 2; ++n) {
    int64_t t = n == 0 ? 1 : 2;
    at::Tensor weights = fw[t] / hw;
    at::Tensor raw = (weights.view({c, 1, 1}) * act[n]).sum(0, true);
    EXPECT_TRUE(close(a.weights[n], weights, 1e-9, 1e-6));
    EXPECT_TRUE(close(a.raw[n], raw, 1e-6, 1e-5));
    EXPECT_TRUE(close(a.layer_map[n], at::relu(raw), 1e-6, 1e-5));
  }
  EXPECT_EQ(a.layer, "conv");
  EXPECT_EQ(a.map.sizes(), (std::vector<int64_t>{2, 1, 8, 10}));
  at::Tensor up = at::upsample_bilinear2d(at::relu(a.raw), {8, 10}, false);
  EXPECT_TRUE(at::equal(a.map, up));
}

TEST(GradCam, ChoosesTheDefaultLayerWhenNoneIsGiven) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  auto a = salient::gradcam(model, reference()["input"], Target::per_sample({0, 1, 2, 3}));
  EXPECT_EQ(a.layer, "features");  // same output as features.10
  EXPECT_TRUE(matches_reference(a.raw, "captum_layer_gradcam_raw"));
}

TEST(GradCam, RejectsALayerWhoseOutputIsNot4D) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  std::string m = msg_of([&] { salient::gradcam(model, reference()["input"], Target::predicted(),
                                                salient::GradCamOptions().layer("fc")); });
  EXPECT_NE(m.find("layer 'fc' outputs [4, 10]"), std::string::npos) << m;
}

TEST(Targets, OutOfRangeTargetsAreRejected) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  std::string m = msg_of([&] { salient::vanilla_gradient(model, x, Target::index(10)); });
  EXPECT_NE(m.find("target 10 out of range: the model has 10 classes"), std::string::npos) << m;
  m = msg_of([&] { salient::gradcam(model, x, Target::per_sample({0, 1, -1, 2})); });
  EXPECT_NE(m.find("target -1 out of range"), std::string::npos) << m;
  m = msg_of([&] { salient::smoothgrad(model, x, Target::per_sample({0, 1})); });
  EXPECT_NE(m.find("got 2 targets for a batch of 4"), std::string::npos) << m;
}

TEST(Targets, ScoreFunctionIsDifferentiated) {
  at::Tensor w = at::randn({3, 4}), b = at::zeros({3});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({2, 4, 1, 1});
  auto t = Target::function([](const at::Tensor& out) { return out.select(1, 0) - out.select(1, 2); }, "0-2");
  auto a = salient::vanilla_gradient(model, x, t);
  EXPECT_TRUE(close(a.map[1].flatten(), w[0] - w[2], 1e-7, 1e-6));
  EXPECT_EQ(to_vector(a.targets), (std::vector<int64_t>{-1, -1}));
}

TEST(Inputs, NonFiniteInputIsRejectedByEveryMethod) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"].clone();
  x[1][0][3][3] = std::numeric_limits<float>::quiet_NaN();
  for (const auto& m : all_methods()) {
    std::string msg = msg_of([&] { m.second(model, x); });
    EXPECT_NE(msg.find("non-finite"), std::string::npos) << m.first << ": " << msg;
  }
}

TEST(Inputs, NonFiniteGradientsAreAnErrorNotAMap) {
  auto model = Model::load(data("models/sqrt_scripted.pt"));
  at::Tensor x = at::zeros({1, 3, 4, 4});
  std::string msg = msg_of([&] { salient::vanilla_gradient(model, x); });
  EXPECT_NE(msg.find("non-finite values (NaN or Inf) in the input gradient"), std::string::npos) << msg;
}

TEST(Invariants, ParametersGradsTrainingFlagAndInputAreUntouched) {
  auto module = torch::jit::load(data("models/resnet_tiny_scripted.pt"));
  module.train();
  std::vector<at::Tensor> before, grads;
  for (auto p : module.parameters()) {
    ASSERT_TRUE(p.requires_grad());
    p.mutable_grad() = at::full_like(p, 0.25);  // a caller's pending gradient
    before.push_back(p.detach().clone());
  }
  auto model = Model::from_module(module);
  at::Tensor x = at::randn({2, 3, 16, 16});
  at::Tensor x_copy = x.clone();
  for (const auto& m : all_methods()) {
    SCOPED_TRACE(m.first);
    auto a = m.second(model, x);
    EXPECT_TRUE(at::equal(x, x_copy));
    EXPECT_FALSE(x.requires_grad());
    EXPECT_FALSE(a.map.requires_grad());
    size_t i = 0;
    for (auto p : module.parameters()) {
      EXPECT_TRUE(at::equal(p.detach(), before[i++]));
      ASSERT_TRUE(p.grad().defined());
      EXPECT_TRUE(at::equal(p.grad(), at::full_like(p, 0.25)));
    }
    for (const auto& sub : module.modules()) EXPECT_TRUE(sub.is_training());
  }
}

namespace {

// conv (3 -> 4, "conv") -> relu -> mean -> fc (4 -> 3), fixed weights; `prologue` runs on
// x first, `scores` names what forward returns given the logits z.
Model small_net(const std::string& prologue, const std::string& scores) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({4, 3, 3, 3}) * 0.3, b = at::randn({4}) * 0.1, fc = at::randn({3, 4});
  torch::jit::Module conv("Conv2d");
  conv.register_parameter("weight", w, false);
  conv.register_parameter("bias", b, false);
  conv.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1])\n");
  torch::jit::Module m("Net");
  m.register_module("conv", conv);
  m.register_parameter("fc_weight", fc, false);
  m.define("def forward(self, x):\n    " + prologue + "\n    a = torch.relu(self.conv.forward(x))\n" +
           "    z = torch.matmul(torch.mean(a, [2, 3]), self.fc_weight.t())\n    return " + scores + "\n");
  return Model::from_module(m);
}

}  // namespace

TEST(Invariants, AModelNormalisingItsInputInPlaceGetsItsFunctionalTwinsMapsAndLeavesTheInputAlone) {
  // A forward that starts with x.sub_(mean).div_(std) would change the caller's tensor,
  // fail every gradient method (an in-place write to a leaf that requires grad) and let
  // each later pass of a method normalise the values again.
  Model in_place = small_net("x.sub_(0.5).div_(0.25)", "z"), functional = small_net("x = (x - 0.5) / 0.25", "z");
  at::Tensor x = at::rand({2, 3, 12, 12});
  const at::Tensor x_copy = x.clone();
  EXPECT_TRUE(at::allclose(in_place.predict(x), functional.predict(x)));
  EXPECT_TRUE(at::allclose(in_place.infer(x), functional.infer(x), 1e-5, 1e-5));
  for (const auto& m : all_methods()) {
    auto a = m.second(in_place, x), f = m.second(functional, x);
    EXPECT_TRUE(close(a.map, f.map, 1e-6, 1e-4)) << m.first;
    EXPECT_TRUE(at::equal(x, x_copy)) << m.first;
  }
}

TEST(Invariants, AModelReturningADictOrATupleGetsTheMapsOfItsTensorTwin) {
  // Every runner (whole graph, folded copy, frozen plan, the layers before and after a
  // CAM layer) takes the scores out of the dict or tuple the same way.
  Model plain = small_net("x = x", "z");
  at::Tensor x = at::rand({2, 3, 12, 12});
  for (const std::string ret : {"{\"logits\": z, \"hidden\": a}", "(z, a)"}) {
    Model wrapped = small_net("x = x", ret);
    for (const auto& m : all_methods()) {
      auto a = m.second(wrapped, x), p = m.second(plain, x);
      EXPECT_TRUE(close(a.map, p.map, 1e-6, 1e-4)) << ret << " " << m.first;
    }
  }
}

TEST(Invariants, TracedAndScriptedFormsGiveTheSameMaps) {
  auto traced = Model::load(data("models/resnet_tiny_traced.pt"));
  auto scripted = Model::load(data("models/resnet_tiny_scripted.pt"));
  at::Tensor x = at::randn({2, 3, 16, 16});
  for (const auto& m : all_methods()) {
    auto a = m.second(traced, x), b = m.second(scripted, x);
    EXPECT_TRUE(close(a.map, b.map, 1e-7, 1e-4)) << m.first;
  }
}

TEST(Invariants, BatchedEqualsPerSample) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  for (const auto& m : all_methods()) {
    auto batched = m.second(model, x);
    for (int64_t i = 0; i < x.size(0); ++i) {
      auto one = m.second(model, x.narrow(0, i, 1));
      // Random draws (noise tunnel, RISE) are shared by the batch, so those compare too.
      // A batch of 1 convolves with other kernels than a batch of 4 (float rounding);
      // Eigen-CAM's SVD amplifies that, so it gets a looser relative tolerance.
      const double rtol = m.first.find("eigen") == 0 ? 2e-3 : 1e-4;
      // Ablation-CAM's weights are differences of near scores (y - y_k) / y: the rounding of
      // each score, relative to the map's scale, is what survives (6e-6 of 0.02 on AVX-512).
      const double atol = m.first == "ablationcam" ? 1e-4 * batched.map[i].abs().max().item<double>() : 1e-7;
      EXPECT_TRUE(close(one.map[0], batched.map[i], atol, rtol)) << m.first << " sample " << i;
    }
  }
}

TEST(FullGrad, MapIsTheSameOnOneThreadAndOnSeveral) {
  // The bias terms are summed in one accumulator per thread.
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto one = salient::fullgrad(model, x, Target::index(1));
  at::set_num_threads(std::max(2, threads));
  auto several = salient::fullgrad(model, x, Target::index(1));
  at::set_num_threads(threads);
  EXPECT_TRUE(close(one.map, several.map, 1e-6, 1e-5));
}

TEST(FullGrad, SquaredConvModelEqualsHandComputedMapAtSizesOffTheVectorWidth) {
  // logit_t = Σ_c V[t,c] mean(A_c²) with A = conv(x) + b: d logit_t / d A = 2 A V[t] / (h w),
  // which varies over positions, so every bias term has a real range. 9×11 inputs (99
  // positions, 7×9 = 63 after the conv) leave remainders after the 8- and 16-wide loops;
  // negative biases check |b_c · g| = |b_c|·|g|.
  const int64_t c = 6, k = 3;
  at::Tensor cw = at::randn({c, 3, 3, 3}), cb = at::randn({c}), fw = at::randn({k, c});
  cb[0] = -std::abs(cb[0].item<float>());
  auto model = Model::from_module(one_conv_model(cw, cb, fw, /*squared=*/true), "squared_conv");
  at::Tensor x = at::randn({2, 3, 9, 11});
  auto a = salient::fullgrad(model, x, Target::per_sample({2, 0}));
  ASSERT_EQ(a.map.sizes(), (std::vector<int64_t>{2, 1, 9, 11}));
  // Σ_c (t_c - min t_c) / (max t_c - min t_c + 1e-7), in double.
  auto norm_sum = [](const at::Tensor& t) {
    at::Tensor lo = t.amin({1, 2}, true), hi = t.amax({1, 2}, true);
    return ((t - lo) / (hi - lo + 1e-7)).sum(0, true);
  };
  at::Tensor xd = x.to(at::kDouble), wd = cw.to(at::kDouble), bd = cb.to(at::kDouble), vd = fw.to(at::kDouble);
  for (int64_t n = 0; n < 2; ++n) {
    const int64_t t = n == 0 ? 2 : 0;
    at::Tensor xi = xd[n].unsqueeze(0).requires_grad_(true);
    at::Tensor act = at::conv2d(xi, wd, bd);  // [1, c, 7, 9]
    at::Tensor score = ((act * act).mean({2, 3})[0] * vd[t]).sum();
    at::Tensor gx = torch::autograd::grad({score}, {xi})[0];
    at::Tensor ga = 2 * act.detach() * vd[t].view({1, c, 1, 1}) / (7.0 * 9.0);
    at::Tensor input_term = norm_sum((xi.detach() * gx)[0].abs());
    at::Tensor bias_term = norm_sum((bd.view({c, 1, 1}) * ga[0]).abs());
    at::Tensor expected = input_term + at::upsample_bilinear2d(bias_term.unsqueeze(0), {9, 11}, false)[0];
    EXPECT_TRUE(close(a.map[n].to(at::kDouble), expected, 1e-5, 1e-4)) << "sample " << n;
  }
}

TEST(SmoothGrad, ChunkedWithATinyBudgetEqualsOneBigBatch) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  auto opts = salient::SmoothGradOptions().n_samples(6).seed(3);
  auto big = salient::smoothgrad(model, x, Target::predicted(), opts);
  auto tiny = salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions(opts).memory_budget(1));
  auto odd = salient::smoothgrad(model, x, Target::predicted(),
                                 salient::SmoothGradOptions(opts).memory_budget(3 * model.bytes_per_sample({3, 64, 64})));
  EXPECT_EQ(salient::chunk_rows(model, x, 1), 1);
  EXPECT_GE(salient::chunk_rows(model, x, int64_t(1) << 30), 24);
  EXPECT_TRUE(close(tiny.map, big.map, 1e-10, 1e-4));
  EXPECT_TRUE(close(odd.map, big.map, 1e-10, 1e-4));
}

TEST(SmoothGrad, SameSeedSameMapOtherSeedOtherMap) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  auto o = salient::SmoothGradOptions().n_samples(4);
  auto a = salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions(o).seed(11));
  auto b = salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions(o).seed(11));
  auto c = salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions(o).seed(12));
  EXPECT_TRUE(at::equal(a.map, b.map));
  EXPECT_FALSE(at::allclose(a.map, c.map));
}

TEST(SmoothGrad, ZeroNoiseEqualsVanilla) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  auto s = salient::smoothgrad(model, x, Target::per_sample({0, 1, 2, 3}),
                               salient::SmoothGradOptions().n_samples(3).noise_level(0));
  EXPECT_TRUE(matches_reference(s.map, "captum_saliency_noabs"));
}

TEST(SmoothGrad, RejectsBadOptions) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  EXPECT_NE(msg_of([&] { salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions().n_samples(0)); })
                .find("n_samples must be >= 1"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { salient::smoothgrad(model, x, Target::predicted(), salient::SmoothGradOptions().noise_level(-1)); })
                .find("noise_level must be >= 0"),
            std::string::npos);
}

TEST(VanillaGradient, MatchesPlainAutogradOnAModelWithInPlaceOps) {
  for (const char* file : {"models/resnet_tiny_traced.pt", "models/resnet_tiny_scripted.pt"}) {
    auto module = torch::jit::load(data(file));
    module.eval();
    at::Tensor x = at::randn({2, 3, 16, 16});
    at::Tensor leaf = x.clone().requires_grad_(true);
    at::Tensor out = module.forward({leaf}).toTensor();
    at::Tensor expected = torch::autograd::grad({out.select(1, 4).sum()}, {leaf})[0];
    auto a = salient::vanilla_gradient(Model::load(data(file)), x, Target::index(4));
    EXPECT_TRUE(close(a.map, expected, 1e-8, 1e-5)) << file;
    // Grad-CAM at a block whose output the next block reads and later in-place ops
    // touch: the leaf-tap forward gives the same weights as a full-graph forward.
    auto model = Model::load(data(file));
    auto cam = salient::gradcam(model, x, Target::index(4), salient::GradCamOptions().layer("body.0"));
    auto full = model.forward(x.clone().requires_grad_(true), {"body.0"}, salient::Autograd::Full);
    at::Tensor g = torch::autograd::grad({full.output.select(1, 4).sum()}, {full.taps[0]})[0];
    EXPECT_TRUE(close(cam.weights, g.mean({2, 3}), 1e-9, 1e-5)) << file;
    EXPECT_TRUE(close(cam.raw, (g.mean({2, 3}).unsqueeze(-1).unsqueeze(-1) * full.taps[0]).sum(1, true), 1e-7, 1e-4));
  }
}

namespace {

// Two ReLUs, one in-place, plus a residual add: what guided backprop and deconvnet must
// override without editing the model.
torch::jit::Module relu_model(const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& fc) {
  torch::jit::Module m("ReluModel");
  m.register_parameter("w1", w1, false);
  m.register_parameter("w2", w2, false);
  m.register_parameter("fc", fc, false);
  m.define(R"(
def forward(self, x):
    a = torch.conv2d(x, self.w1, None, 1, 1)
    a = torch.relu_(a)
    b = torch.conv2d(a, self.w2, None, 1, 1)
    b = torch.relu(b + a)
    return torch.matmul(torch.mean(b, [2, 3]), self.fc.t())
)");
  return m;
}

// The same network in eager ATen with the ReLU rule applied by hand.
at::Tensor eager_relu_rule(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& fc,
                           int64_t target, bool deconv) {
  at::Tensor leaf = x.clone().requires_grad_(true);
  auto rule = [&](const at::Tensor& in) {
    at::Tensor y = deconv ? in + (at::relu(in) - in).detach() : at::relu(in);
    y.register_hook([](const at::Tensor& g) { return at::relu(g); });
    return y;
  };
  at::Tensor a = rule(at::conv2d(leaf, w1, {}, 1, 1));
  at::Tensor b = rule(at::conv2d(a, w2, {}, 1, 1) + a);
  at::Tensor out = at::matmul(b.mean({2, 3}), fc.t());
  return torch::autograd::grad({out.select(1, target).sum()}, {leaf})[0];
}

}  // namespace

TEST(GuidedBackprop, EveryReluIsOverriddenIncludingInPlaceAndFunctionalOnes) {
  at::Tensor w1 = at::randn({4, 2, 3, 3}), w2 = at::randn({4, 4, 3, 3}), fc = at::randn({3, 4});
  auto model = Model::from_module(relu_model(w1, w2, fc), "relu_model");
  at::Tensor x = at::randn({2, 2, 6, 6});
  auto guided = salient::guided_backprop(model, x, Target::index(1));
  auto deconv = salient::deconvnet(model, x, Target::index(1));
  EXPECT_TRUE(close(guided.map, eager_relu_rule(x, w1, w2, fc, 1, false), 1e-6, 1e-5));
  EXPECT_TRUE(close(deconv.map, eager_relu_rule(x, w1, w2, fc, 1, true), 1e-6, 1e-5));
  // The rules change the backward only: the forward, and the plain gradient, are untouched.
  auto plain = salient::vanilla_gradient(model, x, Target::index(1));
  EXPECT_TRUE(at::allclose(guided.output, plain.output));
  EXPECT_TRUE(at::allclose(deconv.output, plain.output));
  EXPECT_FALSE(at::allclose(guided.map, plain.map));
}

TEST(GuidedBackprop, ModuleReluCalledTwiceOnTracedAndScriptedForms) {
  auto traced = Model::load(data("models/resnet_tiny_traced.pt"));
  auto scripted = Model::load(data("models/resnet_tiny_scripted.pt"));
  at::Tensor x = at::randn({2, 3, 16, 16});
  auto fr = traced.forward(x, {}, salient::Autograd::Off, salient::ReluGradient::Guided);
  EXPECT_EQ(fr.relus.size(), 5u);  // stem relu + 2 calls of each block's one ReLU module
  for (auto method : {salient::guided_backprop, salient::deconvnet}) {
    auto a = method(traced, x, Target::index(2), {}), b = method(scripted, x, Target::index(2), {});
    EXPECT_TRUE(close(a.map, b.map, 1e-8, 1e-4));
    EXPECT_GT(a.map.abs().sum().item<double>(), 0);
  }
}

TEST(Deconvnet, TapsAtReluOutputsReadTheSameValuesAndStayOnTheGradientPath) {
  // "relu" and "body" are ReLU outputs, which the deconvnet rule rewrites.
  auto model = Model::load(data("models/resnet_tiny_traced.pt"));
  at::Tensor x = at::randn({2, 3, 16, 16}).requires_grad_(true);
  const std::vector<std::string> taps = {"relu", "body"};
  auto plain = model.forward(x, taps, salient::Autograd::Full);
  auto deconv = model.forward(x, taps, salient::Autograd::Full, salient::ReluGradient::Deconvnet);
  ASSERT_EQ(deconv.taps.size(), 2u);
  EXPECT_TRUE(at::allclose(deconv.output, plain.output));
  for (size_t i = 0; i < taps.size(); ++i) EXPECT_TRUE(at::allclose(deconv.taps[i], plain.taps[i])) << taps[i];
  // After "body" only pooling and the classifier: the gradient there is the same under both rules.
  auto g_plain = torch::autograd::grad({plain.output.select(1, 0).sum()}, {plain.taps[1]})[0];
  auto g_deconv = torch::autograd::grad({deconv.output.select(1, 0).sum()}, {deconv.taps[1]})[0];
  EXPECT_TRUE(at::allclose(g_deconv, g_plain));
}

namespace {

// A smooth network (tanh, no ReLU kinks): Integrated Gradients' completeness holds to
// quadrature accuracy.
torch::jit::Module smooth_model(const at::Tensor& w1, const at::Tensor& fc) {
  torch::jit::Module m("SmoothModel");
  m.register_parameter("w1", w1, false);
  m.register_parameter("fc", fc, false);
  m.define(R"(
def forward(self, x):
    a = torch.tanh(torch.conv2d(x, self.w1, None, 1, 1))
    return torch.matmul(torch.mean(a * a, [2, 3]), self.fc.t())
)");
  return m;
}

}  // namespace

TEST(Chunks, EvenChunksKeepTheChunkCountAndDifferInSizeByOneAtMost) {
  using salient::detail::even_chunks;
  using V = std::vector<int64_t>;
  EXPECT_EQ(even_chunks(26, 25), (V{0, 13, 26}));  // 13 + 13, not 25 + 1
  EXPECT_EQ(even_chunks(26, 6), (V{0, 5, 10, 15, 20, 26}));
  EXPECT_EQ(even_chunks(12, 6), (V{0, 6, 12}));
  EXPECT_EQ(even_chunks(5, 25), (V{0, 5}));  // one chunk: all rows
  EXPECT_EQ(even_chunks(1, 1), (V{0, 1}));
  EXPECT_EQ(even_chunks(0, 4), (V{0}));
  const V b = even_chunks(101, 25);
  ASSERT_EQ(b.size(), 6u);  // 5 chunks, as 25 a chunk would need
  for (size_t i = 0; i + 1 < b.size(); ++i) EXPECT_TRUE(b[i + 1] - b[i] == 20 || b[i + 1] - b[i] == 21);
  EXPECT_EQ(b.back(), 101);
}

TEST(IntegratedGradients, CompletenessWithin1PercentAt64GaussLegendreSteps) {
  at::manual_seed(5);
  auto model = Model::from_module(smooth_model(at::randn({6, 3, 3, 3}), at::randn({4, 6})), "smooth");
  at::Tensor x = at::randn({3, 3, 8, 8});
  for (auto kind : {salient::BaselineKind::Zero, salient::BaselineKind::Blur, salient::BaselineKind::Noise}) {
    auto o = salient::IntegratedGradientsOptions().n_steps(64).baseline_kind(kind);
    auto a = salient::integrated_gradients(model, x, Target::per_sample({0, 2, 3}), o);
    at::Tensor base = salient::make_baseline(x, o);
    at::Tensor f = model.predict(x), f0 = model.predict(base);
    at::Tensor gap = at::stack({f[0][0] - f0[0][0], f[1][2] - f0[1][2], f[2][3] - f0[2][3]});
    for (int64_t i = 0; i < 3; ++i)
      EXPECT_LE(std::abs(a.delta[i].item<double>()), 0.01 * std::abs(gap[i].item<double>())) << int(kind) << " " << i;
    // delta is sum(attr) - (F(x) - F(x')) exactly as reported.
    EXPECT_TRUE(close(a.delta, a.map.flatten(1).sum(1) - gap, 1e-6, 1e-4));
  }
}

TEST(IntegratedGradients, BaselinesAreDeterministicAndChecked) {
  at::Tensor x = at::randn({2, 3, 16, 16});
  auto o = salient::IntegratedGradientsOptions();
  EXPECT_TRUE(at::equal(salient::make_baseline(x, o), at::zeros_like(x)));
  auto noise = salient::IntegratedGradientsOptions().baseline_kind(salient::BaselineKind::Noise).seed(4);
  at::Tensor n1 = salient::make_baseline(x, noise), n2 = salient::make_baseline(x, noise);
  EXPECT_TRUE(at::equal(n1, n2));
  EXPECT_GE(n1[0].min().item<double>(), x[0].min().item<double>());
  EXPECT_LE(n1[0].max().item<double>(), x[0].max().item<double>());
  // A blurred constant image is the image.
  at::Tensor flat = at::full({1, 3, 16, 16}, 0.7);
  EXPECT_TRUE(at::allclose(salient::gaussian_blur(flat, 11, 5.0), flat));
  at::Tensor user = at::randn({3, 16, 16});
  EXPECT_TRUE(at::equal(salient::make_baseline(x, salient::IntegratedGradientsOptions().baseline(user))[1], user));
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  EXPECT_NE(msg_of([&] {
              salient::integrated_gradients(model, reference()["input"], Target::predicted(),
                                            salient::IntegratedGradientsOptions().baseline(at::zeros({3, 8, 8})));
            }).find("does not fit input"),
            std::string::npos);
  EXPECT_NE(msg_of([&] {
              salient::integrated_gradients(model, reference()["input"], Target::predicted(),
                                            salient::IntegratedGradientsOptions().n_steps(0));
            }).find("n_steps must be >= 1"),
            std::string::npos);
}

TEST(NoiseTunnel, WrapsAnyInputMethodAndKeepsItsTargets) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  int calls = 0;
  auto ig_base = [&](const Model& m, const at::Tensor& rows, const Target& t) {
    ++calls;
    return salient::integrated_gradients(m, rows, t, salient::IntegratedGradientsOptions().n_steps(4));
  };
  auto o = salient::SmoothGradOptions().n_samples(3).seed(2).base(ig_base);
  auto a = salient::smoothgrad(model, x, Target::per_sample({3, 2, 1, 0}), o);
  EXPECT_GE(calls, 1);
  EXPECT_EQ(to_vector(a.targets), (std::vector<int64_t>{3, 2, 1, 0}));
  // Zero noise: the tunnel returns the base method's own map.
  auto zero = salient::smoothgrad(model, x, Target::per_sample({3, 2, 1, 0}),
                                  salient::SmoothGradOptions(o).noise_level(0));
  auto ig = salient::integrated_gradients(model, x, Target::per_sample({3, 2, 1, 0}),
                                          salient::IntegratedGradientsOptions().n_steps(4));
  EXPECT_TRUE(close(zero.map, ig.map, 1e-10, 1e-4));
  auto var = salient::smoothgrad(model, x, Target::per_sample({3, 2, 1, 0}),
                                 salient::SmoothGradOptions(o).noise_level(0).aggregation(salient::NoiseAggregation::Variance));
  EXPECT_LT(var.map.abs().max().item<double>(), 1e-12);
}

TEST(Occlusion, LinearModelGetsTheMeanWindowContributionAndBadWindowsAreRejected) {
  at::Tensor w = at::randn({2, 1 * 6 * 6}), b = at::zeros({2});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({1, 1, 6, 6});
  auto a = salient::occlusion(model, x, Target::index(1),
                              salient::OcclusionOptions().window(3).stride(3).optimized(false));
  // Windows tile the image: each pixel's value is its window's sum of w * x.
  at::Tensor contrib = (w[1].view({6, 6}) * x[0][0]);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 6; ++j) {
      double expected = contrib.narrow(0, i / 3 * 3, 3).narrow(1, j / 3 * 3, 3).sum().item<double>();
      EXPECT_NEAR(a.map[0][0][i][j].item<double>(), expected, 1e-5);
    }
  // A stride past the image's end: Captum's count gives two starts per side (0 and 9), the
  // second outside the 6x6 image. Only the window at the corner runs; the pixels it never
  // covers get 0.
  auto far = salient::occlusion(model, x, Target::index(1),
                                salient::OcclusionOptions().window(3).stride(9).optimized(false));
  EXPECT_EQ(far.forward_samples, 2);  // the clean input and the one window
  at::Tensor corner = at::zeros({6, 6});
  corner.narrow(0, 0, 3).narrow(1, 0, 3).fill_(contrib.narrow(0, 0, 3).narrow(1, 0, 3).sum().item<double>());
  EXPECT_TRUE(close(far.map[0][0], corner, 1e-5, 0));
  EXPECT_NE(msg_of([&] { salient::occlusion(model, x, Target::index(1), salient::OcclusionOptions().window(7)); })
                .find("window 7 is larger than the image (6x6)"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { salient::occlusion(model, x, Target::index(2), salient::OcclusionOptions().window(2)); })
                .find("target 2 out of range"),
            std::string::npos);
}

TEST(Rise, MapIsTheScoreWeightedMaskMeanAndSeedsRepeat) {
  at::Tensor w = at::randn({2, 1 * 8 * 8}), b = at::zeros({2});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({2, 1, 8, 8});
  auto o = salient::RiseOptions().n_masks(50).cell(3).seed(9).score(salient::Score::Logit).optimized(false);
  auto a = salient::rise(model, x, Target::per_sample({0, 1}), o);
  at::Tensor masks = salient::rise_masks(50, 8, 8, o);
  EXPECT_EQ(masks.sizes(), (std::vector<int64_t>{50, 1, 8, 8}));
  EXPECT_GE(masks.min().item<double>(), 0.0);
  EXPECT_LE(masks.max().item<double>(), 1.0);
  for (int64_t s = 0; s < 2; ++s) {
    at::Tensor scores = at::matmul((x[s] * masks).flatten(1), w[s].unsqueeze(1)).squeeze(1);  // [50]
    at::Tensor expected = (scores.view({50, 1, 1, 1}) * masks).sum(0) / (50 * 0.5);
    EXPECT_TRUE(close(a.map[s], expected, 1e-5, 1e-4));
  }
  auto again = salient::rise(model, x, Target::per_sample({0, 1}), o);
  EXPECT_TRUE(at::equal(a.map, again.map));
  auto other = salient::rise(model, x, Target::per_sample({0, 1}), salient::RiseOptions(o).seed(10));
  EXPECT_FALSE(at::allclose(a.map, other.map));
  // Each sample alone gets the same masks, so the same map.
  auto one = salient::rise(model, x.narrow(0, 1, 1), Target::index(1), o);
  EXPECT_TRUE(close(one.map[0], a.map[1], 1e-6, 1e-5));
  // A cell wider than the image would make every mask one constant.
  EXPECT_NE(msg_of([&] { salient::rise_masks(5, 8, 8, salient::RiseOptions().cell(9)); })
                .find("rise: cell 9 is larger than the image (8x8)"),
            std::string::npos);
}

TEST(Rise, MasksAreTheirGridUpsampledBilinearlyAndCroppedAtTheirShift) {
  // The definition, written out with ATen: a grid of cells kept with probability `keep`,
  // upsampled to one cell more than the image (align_corners = false), cropped at a random
  // shift within a cell; grid and shifts drawn in that order from the seeded generator.
  struct Case {
    int64_t m, h, w, cell;
  };
  for (const Case& c : {Case{40, 8, 8, 3}, Case{25, 10, 7, 0}, Case{6, 57, 41, 9}}) {
    const auto o = salient::RiseOptions().cell(c.cell).keep(0.4).seed(5);
    const int64_t cell = c.cell > 0 ? c.cell : (std::max(c.h, c.w) + 6) / 7;
    const int64_t gh = (c.h + cell - 1) / cell, gw = (c.w + cell - 1) / cell;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
    at::Tensor grid = (at::rand({c.m, 1, gh, gw}, gen) < 0.4).to(at::kFloat);
    at::Tensor shifts = at::randint(0, cell, {c.m, 2}, gen, at::TensorOptions().dtype(at::kLong));
    at::Tensor up = at::upsample_bilinear2d(grid, {(gh + 1) * cell, (gw + 1) * cell}, /*align_corners=*/false);
    at::Tensor masks = salient::rise_masks(c.m, c.h, c.w, o);
    ASSERT_EQ(masks.sizes(), (std::vector<int64_t>{c.m, 1, c.h, c.w}));
    for (int64_t i = 0; i < c.m; ++i) {
      at::Tensor expected =
          up[i].narrow(1, shifts[i][0].item<int64_t>(), c.h).narrow(2, shifts[i][1].item<int64_t>(), c.w);
      EXPECT_TRUE(close(masks[i], expected, 1e-6, 0)) << "mask " << i << " of " << c.h << "x" << c.w;
    }
  }
}

TEST(Rise, MasksMadeChunkByChunkUnderASmallBudgetGiveTheSameMap) {
  // 60 masks of 12x12 (34.6 KB): held whole under the default budget; under 16 KB, made a
  // chunk of rows at a time and again in blocks of 3 for the weighted sum.
  at::Tensor w = at::randn({2, 1 * 12 * 12}), b = at::zeros({2});
  auto model = Model::from_module(linear_model(w, b), "linear");
  at::Tensor x = at::randn({3, 1, 12, 12});
  auto o = salient::RiseOptions().n_masks(60).cell(5).seed(3).score(salient::Score::Logit).optimized(false);
  const int64_t small = 16 << 10, chunk = salient::forward_chunk_rows(model, x, small);
  ASSERT_GT(chunk, 1);   // chunks of several rows ...
  ASSERT_LT(chunk, 60);  // ... that cross from one sample's masks to the next's
  ASSERT_NE(60 % chunk, 0);
  auto held = salient::rise(model, x, Target::per_sample({0, 1, 0}), o);
  auto made = salient::rise(model, x, Target::per_sample({0, 1, 0}), salient::RiseOptions(o).memory_budget(small));
  EXPECT_TRUE(close(made.map, held.map, 1e-6, 1e-5));
  EXPECT_EQ(made.forward_samples, held.forward_samples);
}

TEST(FasterScoreCam, AllChannelsIsScoreCamAndTopKKeepsTheMostVariedChannels) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"].narrow(0, 0, 2);
  auto full = salient::scorecam(model, x, Target::per_sample({0, 1}),
                                salient::ScoreCamOptions().layer("features.10").optimized(false));
  auto all = salient::faster_scorecam(model, x, Target::per_sample({0, 1}),
                                      salient::FasterScoreCamOptions().layer("features.10").top_k(64).optimized(false));
  EXPECT_TRUE(close(all.weights, full.weights, 1e-9, 1e-5));
  auto fast = salient::faster_scorecam(model, x, Target::per_sample({0, 1}),
                                       salient::FasterScoreCamOptions().layer("features.10").optimized(false));
  EXPECT_EQ(fast.forward_samples, 2 + 2 * 7);  // the layer pass, then ceil(10% of 64) channels per sample
  at::Tensor act = model.forward(x, {"features.10"}).taps[0];
  at::Tensor top = std::get<1>(act.flatten(2).var(2).topk(7, 1));
  for (int64_t s = 0; s < 2; ++s) {
    EXPECT_NEAR(fast.weights[s].sum().item<double>(), 1.0, 1e-6);
    EXPECT_NEAR(fast.weights[s].index_select(0, top[s]).sum().item<double>(), 1.0, 1e-6);
  }
}

TEST(ReciproCam, OnAOneConvModelTheLogitMapIsGradCamsMap) {
  const int64_t c = 5;
  at::Tensor cw = at::randn({c, 2, 3, 3}), cb = at::randn({c}), fw = at::randn({3, c});
  auto model = Model::from_module(one_conv_model(cw, cb, fw), "one_conv");
  at::Tensor x = at::randn({2, 2, 8, 10});
  // Keeping one position (i, j): logit_t = sum_c V[t,c] A_c(i,j) / (h w), Grad-CAM's raw map.
  auto r = salient::reciprocam(model, x, Target::per_sample({1, 2}),
                               salient::ReciproCamOptions().layer("conv").score(salient::Score::Logit));
  auto g = salient::gradcam(model, x, Target::per_sample({1, 2}), salient::GradCamOptions().layer("conv"));
  EXPECT_TRUE(close(r.raw, g.raw, 1e-6, 1e-5));
  EXPECT_EQ(r.map.sizes(), (std::vector<int64_t>{2, 1, 8, 10}));
  // The default scores class probabilities: the softmax of those masked logits.
  auto p = salient::reciprocam(model, x, Target::per_sample({1, 2}), salient::ReciproCamOptions().layer("conv"));
  EXPECT_GE(p.raw.min().item<double>(), 0.0);
  EXPECT_LE(p.raw.max().item<double>(), 1.0);
  auto gauss = salient::reciprocam(model, x, Target::per_sample({1, 2}),
                                   salient::ReciproCamOptions().layer("conv").gaussian(true).score(salient::Score::Logit));
  EXPECT_FALSE(at::allclose(gauss.raw, r.raw));
}

TEST(AblationCam, BatchedEqualsPerSampleAndRejectsNon4DLayers) {
  auto model = Model::load(data("models/resnet_tiny_scripted.pt"));
  // Seeded: Ablation-CAM's weights divide by the clean score, and an unlucky draw with a
  // score near zero magnifies float rounding past any fixed tolerance.
  at::manual_seed(4);
  at::Tensor x = at::randn({3, 3, 16, 16});
  auto all = salient::ablationcam(model, x, Target::per_sample({0, 1, 2}), salient::AblationCamOptions().layer("body.0"));
  auto one = salient::ablationcam(model, x.narrow(0, 2, 1), Target::index(2), salient::AblationCamOptions().layer("body.0"));
  EXPECT_TRUE(close(one.weights[0], all.weights[2], 1e-6, 1e-4));
  EXPECT_NE(msg_of([&] { salient::ablationcam(model, x, Target::index(0), salient::AblationCamOptions().layer("fc")); })
                .find("layer 'fc' outputs [3, 5]"),
            std::string::npos);
}

TEST(Explain, SharedPassGivesEachMethodsOwnMapInOneForwardAndTwoBackwards) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  const int64_t n = x.size(0);
  const std::vector<std::string> names = {"vanilla", "input_x_gradient", "gradcam", "layercam", "eigencam",
                                          "guided_backprop", "guided_gradcam", "fullgrad"};
  salient::ExplainStats stats;
  auto together = salient::explain(model, x, names, Target::predicted(), {}, &stats);
  EXPECT_EQ(stats.forward_samples, n);
  EXPECT_EQ(stats.backward_samples, 2 * n);  // the standard one and the guided one
  EXPECT_EQ(stats.shared, names);
  for (const auto& name : names) {
    auto alone = salient::explain(model, x, name, Target::predicted());
    // The shared pass runs a BatchNorm-folded copy with the CAM layer, the bias layers and
    // the ReLUs as extra outputs; alone, a method runs its own folded copy
    // (Autograd::Input), or the model's graph up to its layer and after the first call a
    // frozen prefix (Model::forward): the same function, rounded differently.
    EXPECT_TRUE(close(together.at(name).map, alone.map, 1e-6 * alone.map.abs().max().item<double>(), 1e-4)) << name;
    EXPECT_TRUE(at::equal(together.at(name).targets, alone.targets)) << name;
  }
  // Without a guided method: one backward for the input and the layer together.
  auto plain = salient::explain(model, x, {"vanilla", "gradcam", "hirescam"}, Target::predicted(), {}, &stats);
  EXPECT_EQ(stats.forward_samples, n);
  EXPECT_EQ(stats.backward_samples, n);
  // Methods outside the shared pass add their own passes.
  salient::ExplainSettings s;
  s.window = 32;
  s.stride = 32;
  salient::explain(model, x, {"gradcam", "occlusion"}, Target::index(1), s, &stats);
  EXPECT_EQ(stats.forward_samples, n + n * (1 + 4));
}

TEST(Explain, UnknownNamesAndBadSettingsAreErrorsBeforeAnythingRuns) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  EXPECT_NE(msg_of([&] { salient::explain(model, x, "magic"); }).find("unknown method 'magic'; available: vanilla"),
            std::string::npos);
  salient::ExplainSettings s;
  s.base = "scorecam";
  EXPECT_NE(msg_of([&] { salient::explain(model, x, "smoothgrad", Target::predicted(), s); })
                .find("unknown base method 'scorecam' for the noise tunnel"),
            std::string::npos);
  s = {};
  s.n_steps = 0;
  EXPECT_NE(msg_of([&] { salient::explain(model, x, "integrated_gradients", Target::predicted(), s); })
                .find("n_steps must be >= 1, got 0"),
            std::string::npos);
  EXPECT_NE(msg_of([&] { salient::explain(model, x, "gradcam", Target::predicted(), salient::ExplainSettings{"fc"}); })
                .find("CAM methods need a 4-D"),
            std::string::npos);
  // `all` drops the CAM family when no layer suits it, FullGrad when there is no bias.
  auto names = salient::suitable_methods(model, {3, 64, 64});
  EXPECT_EQ(names.size(), salient::methods().size());
  auto lin = Model::from_module(linear_model(at::randn({4, 12}), at::randn({4})), "linear");
  auto few = salient::suitable_methods(lin, {3, 2, 2});
  EXPECT_EQ(std::count(few.begin(), few.end(), "gradcam"), 0);
  EXPECT_EQ(std::count(few.begin(), few.end(), "fullgrad"), 0);
  EXPECT_EQ(std::count(few.begin(), few.end(), "integrated_gradients"), 1);
}

TEST(EigenCam, ProjectionEqualsTheSvdsFirstComponentWhetherPositionsOrChannelsAreFewer) {
  const int64_t c = 16;
  auto model = Model::from_module(one_conv_model(at::randn({c, 2, 3, 3}), at::randn({c}), at::randn({3, c})), "conv");
  for (int64_t side : {5, 10}) {  // 3x3 = 9 positions < 16 channels; 8x8 = 64 > 16
    at::Tensor x = at::randn({2, 2, side, side});
    auto a = salient::eigencam(model, x, Target::index(0), salient::EigenCamOptions().layer("conv"));
    at::Tensor act = model.forward(x, {"conv"}).taps[0].to(at::kDouble);
    const int64_t hw = (side - 2) * (side - 2);
    for (int64_t i = 0; i < 2; ++i) {
      at::Tensor rows = act[i].reshape({c, hw}).t();
      rows = rows - rows.mean(0, true);
      at::Tensor v = std::get<2>(at::linalg_svd(rows, false))[0];
      at::Tensor expected = at::matmul(rows, v);
      at::Tensor ours = a.raw[i].flatten().to(at::kDouble);
      if ((ours * expected).sum().item<double>() < 0) expected = -expected;
      EXPECT_TRUE(close(ours, expected, 1e-5 * expected.abs().max().item<double>(), 1e-4)) << side << " " << i;
    }
  }
}

TEST(EigenCam, ProjectionIsExactWhenTheTopComponentsAreClose) {
  // Channels from 8 random input channels: a flat spectrum (top two eigenvalues within
  // 15%) over more directions than one Lanczos run holds, so it restarts. 64 channels use
  // the Gram matrix; 300 apply it through the activations, over channels (20x20 > 300
  // positions) and over positions (17x17 <= 300).
  for (auto [c, side] : std::vector<std::pair<int64_t, int64_t>>{{64, 14}, {300, 22}, {300, 19}}) {
    const int64_t hw = (side - 2) * (side - 2);
    auto model =
        Model::from_module(one_conv_model(at::randn({c, 8, 3, 3}), at::randn({c}), at::randn({3, c})), "conv");
    at::Tensor x = at::randn({2, 8, side, side});
    auto a = salient::eigencam(model, x, Target::index(0), salient::EigenCamOptions().layer("conv"));
    at::Tensor act = model.forward(x, {"conv"}).taps[0].to(at::kDouble);
    for (int64_t i = 0; i < 2; ++i) {
      at::Tensor rows = act[i].reshape({c, hw}).t();
      rows = rows - rows.mean(0, true);
      auto svd = at::linalg_svd(rows, false);
      at::Tensor s = std::get<1>(svd);
      EXPECT_GT((s[1] / s[0]).item<double>(), 0.85) << "the case should be hard: c " << c << " side " << side;
      at::Tensor expected = at::matmul(rows, std::get<2>(svd)[0]);
      at::Tensor ours = a.raw[i].flatten().to(at::kDouble);
      if ((ours * expected).sum().item<double>() < 0) expected = -expected;
      EXPECT_TRUE(close(ours, expected, 1e-5 * expected.abs().max().item<double>(), 1e-4)) << c << " " << side << " " << i;
    }
  }
}

TEST(EigenCam, NonFiniteActivationsAreAnErrorNotAMap) {
  at::Tensor w = at::randn({4, 2, 3, 3});
  w[0][0][1][1] = std::numeric_limits<float>::infinity();
  auto model = Model::from_module(one_conv_model(w, at::zeros({4}), at::randn({3, 4})), "conv");
  try {
    salient::eigencam(model, at::rand({1, 2, 6, 6}) + 0.5, Target::index(0), salient::EigenCamOptions().layer("conv"));
    ADD_FAILURE() << "no error";
  } catch (const salient::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite values (NaN or Inf) in the layer's activations"), std::string::npos)
        << e.what();
  }
}

#include "helpers.hpp"

using namespace testing_salient;
using salient::Autograd;
using salient::Model;

namespace {


}  // namespace

TEST(ModelTaps, LogitsMatchTheModulesOwnForward) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"];
  EXPECT_TRUE(matches_reference(model.predict(x), "logits"));
}

TEST(ModelTaps, TappedActivationAndItsGradientMatchReference) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  const auto& ref = reference();
  auto r = model.forward(ref["input"], {"features.10"}, Autograd::FromTaps);
  ASSERT_EQ(r.taps.size(), 1u);
  EXPECT_TRUE(matches_reference(r.taps[0], "target_layer_activation"));
  at::Tensor s = r.output.gather(1, ref["targets"].view({-1, 1})).sum();
  at::Tensor g = torch::autograd::grad({s}, {r.taps[0]})[0];
  EXPECT_TRUE(matches_reference(g, "target_layer_gradient"));
}

TEST(ModelTaps, FullModeGivesInputAndLayerGradientsInOneBackward) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  const auto& ref = reference();
  at::Tensor x = ref["input"].clone().requires_grad_(true);
  auto r = model.forward(x, {"features.10"}, Autograd::Full);
  at::Tensor s = r.output.gather(1, ref["targets"].view({-1, 1})).sum();
  auto g = torch::autograd::grad({s}, {x, r.taps[0]});
  EXPECT_TRUE(matches_reference(g[0], "captum_saliency_noabs"));
  EXPECT_TRUE(matches_reference(g[1], "target_layer_gradient"));
}

TEST(ModelTaps, FromTapsRecordsNoGraphBeforeTheLayer) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  auto r = model.forward(reference()["input"], {"features.4", "features.10"}, Autograd::FromTaps);
  // The earliest tap is a leaf; the later one stays connected to it.
  EXPECT_TRUE(r.taps[0].requires_grad());
  EXPECT_TRUE(r.taps[0].is_leaf());
  EXPECT_FALSE(r.taps[1].is_leaf());
  auto g = torch::autograd::grad({r.output.sum()}, {r.taps[0], r.taps[1]});
  EXPECT_GT(g[0].abs().sum().item<double>(), 0);
  EXPECT_GT(g[1].abs().sum().item<double>(), 0);
}

TEST(ModelTaps, InPlaceReluAndResidualAddTapTheModulesRealOutput) {
  for (const char* file : {"models/resnet_tiny_traced.pt", "models/resnet_tiny_scripted.pt"}) {
    SCOPED_TRACE(file);
    auto model = Model::load(data(file));
    at::Tensor x = at::randn({2, 3, 16, 16}, at::TensorOptions().dtype(at::kFloat));
    auto r = model.forward(x, {"stem", "relu", "body.0.conv2", "body.0", "body"}, Autograd::Off);
    at::Tensor stem = r.taps[0], relu = r.taps[1], conv2 = r.taps[2], block0 = r.taps[3];
    // stem is the conv output before the in-place ReLU that follows it.
    EXPECT_LT(stem.min().item<double>(), 0);
    EXPECT_TRUE(at::allclose(relu, at::relu(stem)));
    // body.0 = relu(conv2 + identity): the residual add and its in-place ReLU.
    EXPECT_TRUE(at::allclose(block0, at::relu(conv2 + relu), 1e-5, 1e-6));
    // body is the output of its last block; the head's pooled features come from it.
    EXPECT_EQ(r.taps[4].sizes(), (std::vector<int64_t>{2, 8, 16, 16}));
    // The module's own output is unchanged by the taps.
    at::Tensor plain = model.module().forward({x}).toTensor();
    EXPECT_TRUE(at::allclose(r.output, plain));
  }
}

TEST(ModelTaps, ModuleCalledTwiceIsTappedAtItsLastCall) {
  auto model = Model::load(data("models/resnet_tiny_scripted.pt"));
  at::Tensor x = at::randn({1, 3, 16, 16});
  auto r = model.forward(x, {"body.0.relu", "body.0"}, Autograd::Off);
  EXPECT_TRUE(at::equal(r.taps[0], r.taps[1]));
}

TEST(ModelTaps, TracedAndScriptedFormsGiveTheSameTaps) {
  auto traced = Model::load(data("models/resnet_tiny_traced.pt"));
  auto scripted = Model::load(data("models/resnet_tiny_scripted.pt"));
  at::Tensor x = at::randn({3, 3, 16, 16});
  std::vector<std::string> taps = {"stem", "body.0.bn1", "body.1", "pool", "fc"};
  auto a = traced.forward(x, taps), b = scripted.forward(x, taps);
  for (size_t i = 0; i < taps.size(); ++i) EXPECT_TRUE(at::allclose(a.taps[i], b.taps[i], 1e-5, 1e-6)) << taps[i];
}

TEST(ModelLayers, ListsEveryModuleWithKindOpAndShape) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  auto layers = model.layers({3, 64, 64});
  std::vector<std::string> paths;
  for (const auto& l : layers) paths.push_back(l.path);
  std::vector<std::string> expected = {"features", "features.0", "features.1", "features.2", "features.3",
                                       "features.4", "features.5", "features.6", "features.7", "features.8",
                                       "features.9", "features.10", "avgpool", "fc"};
  EXPECT_EQ(paths, expected);
  EXPECT_EQ(layers[1].kind, "Conv2d");
  EXPECT_EQ(layers[1].op, "aten::_convolution");
  EXPECT_EQ(layers[1].shape, (std::vector<int64_t>{1, 16, 64, 64}));
  EXPECT_EQ(layers[11].kind, "ReLU");
  EXPECT_EQ(layers[11].shape, (std::vector<int64_t>{1, 64, 16, 16}));
  EXPECT_EQ(layers[13].shape, (std::vector<int64_t>{1, 10}));
}

TEST(ModelLayers, DefaultCamLayerIsTheLastSpatialOutputOutermostModule) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  EXPECT_EQ(model.default_cam_layer({3, 64, 64}), "features");
  auto res = Model::load(data("models/resnet_tiny_traced.pt"));
  EXPECT_EQ(res.default_cam_layer({3, 16, 16}), "body");
}

TEST(ModelLayers, UnknownLayerErrorListsClosestNames) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  std::string m = msg_of([&] { model.forward(reference()["input"], {"features.100"}); });
  EXPECT_NE(m.find("unknown layer 'features.100'"), std::string::npos) << m;
  EXPECT_NE(m.find("features.10"), std::string::npos) << m;
}

TEST(ModelLayers, InputChannelsComeFromTheFirstConvolution) {
  EXPECT_EQ(Model::load(data("reference/smallcnn_traced.pt")).input_channels(), 3);
  EXPECT_EQ(Model::load(data("models/resnet_tiny_scripted.pt")).input_channels(), 3);
}

TEST(ModelLoad, RejectsMissingEmptyAndNonTorchScriptFiles) {
  std::string dir = temp_dir("model_load");
  EXPECT_NE(msg_of([&] { Model::load(dir + "/nope.pt"); }).find("not found"), std::string::npos);
  { std::ofstream(dir + "/empty.pt"); }
  EXPECT_NE(msg_of([&] { Model::load(dir + "/empty.pt"); }).find("is empty"), std::string::npos);
  { std::ofstream(dir + "/text.pt") << "hello"; }
  EXPECT_NE(msg_of([&] { Model::load(dir + "/text.pt"); }).find("not a TorchScript model"), std::string::npos);
  // A zip archive that is not TorchScript: the reference's README zipped would do; use a .npy-free zip.
  { std::ofstream(dir + "/fake.pt", std::ios::binary) << std::string("PK\x03\x04garbage", 11); }
  EXPECT_NE(msg_of([&] { Model::load(dir + "/fake.pt"); }).find("not a TorchScript model"), std::string::npos);
}

TEST(ModelForward, RejectedInputSizeGivesTheModelsErrorBriefly) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  std::string m = msg_of([&] { model.predict(at::zeros({1, 1, 64, 64})); });
  EXPECT_NE(m.find("failed on input of shape [1, 1, 64, 64]"), std::string::npos) << m;
  EXPECT_NE(m.find("channels"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(ModelForward, TrainingFlagIsRestoredAndEvalSemanticsUsed) {
  auto module = torch::jit::load(data("models/resnet_tiny_scripted.pt"));
  at::Tensor x = at::randn({2, 3, 16, 16});
  at::Tensor eval_out = module.forward({x}).toTensor();
  module.train();
  auto model = Model::from_module(module);
  auto out = model.predict(x);
  EXPECT_TRUE(at::allclose(out, eval_out, 1e-5, 1e-6));  // BN running stats, no dropout
  for (const auto& m : module.modules()) EXPECT_TRUE(m.is_training());
}

TEST(ModelSplit, RunningFromALayerReproducesTheOutputAndOnlyRunsWhatFollows) {
  for (const char* file : {"models/resnet_tiny_traced.pt", "models/resnet_tiny_scripted.pt"}) {
    auto model = Model::load(data(file));
    at::Tensor x = at::randn({3, 3, 16, 16});
    at::Tensor expected = model.predict(x);
    for (const char* layer : {"stem", "body.0.conv2", "body.0.bn1", "body.1", "pool"}) {
      SCOPED_TRACE(std::string(file) + " " + layer);
      auto st = model.run_to_layer(x, layer);
      EXPECT_TRUE(at::allclose(st.output, expected, 1e-5, 1e-6));
      // The layers before are cut off: only tensors they made are carried over.
      EXPECT_FALSE(st.input.defined());
      at::Tensor rows = at::arange(3, at::TensorOptions().dtype(at::kLong));
      EXPECT_TRUE(at::allclose(model.run_from_layer(st, st.activation, rows), expected, 1e-5, 1e-6));
      // Modified activations, rows out of order and repeated: same as re-running all layers.
      at::Tensor picks = at::tensor({2, 0, 2}, at::TensorOptions().dtype(at::kLong));
      at::Tensor changed = st.activation.index_select(0, picks) * 0.5 + 0.1;
      auto full = st;
      full.extras.clear();
      full.input = x;
      EXPECT_TRUE(at::allclose(model.run_from_layer(st, changed, picks), model.run_from_layer(full, changed, picks),
                               1e-5, 1e-6));
    }
  }
}

TEST(ModelBias, BiasLayersFollowInPlaceWritesAndReplacedTensors) {
  auto module = torch::jit::load(data("reference/smallcnn_traced.pt"));
  auto model = Model::from_module(module);
  auto first = model.bias_layers();
  ASSERT_GE(first.size(), 2u);
  ASSERT_EQ(first[0].path, "features.0");
  ASSERT_EQ(first[1].path, "features.1");
  // Unchanged tensors: the cached bias itself comes back.
  EXPECT_TRUE(model.bias_layers()[1].bias.is_same(first[1].bias));

  // BatchNorm's effective bias b - mean·w/sqrt(var + eps) follows an in-place write to
  // its running mean.
  auto features = module.attr("features").toModule();
  auto bn = features.attr("1").toModule();
  at::Tensor w = bn.attr("weight").toTensor().detach(), var = bn.attr("running_var").toTensor();
  {
    at::NoGradGuard g;
    bn.attr("running_mean").toTensor().add_(1.0);
  }
  at::Tensor expected = first[1].bias - w / at::sqrt(var + 1e-5);
  EXPECT_TRUE(at::allclose(model.bias_layers()[1].bias, expected, 1e-5, 1e-6));

  // The BatchNorm's gradient is read at its input, the conv's output, and rescaled by
  // 1 / (w / sqrt(var + eps)); a zero weight would lose it there, so the BatchNorm's own
  // output is tapped then.
  EXPECT_EQ(first[1].tap, "features.0");
  EXPECT_EQ(first[0].tap, "features.0");
  EXPECT_FALSE(first[0].tap_scale.defined());
  EXPECT_TRUE(at::allclose(model.bias_layers()[1].tap_scale, at::sqrt(var + 1e-5) / w, 1e-5, 1e-6));
  {
    at::NoGradGuard g;
    bn.attr("weight").toTensor()[0] = 0.0;
  }
  EXPECT_EQ(model.bias_layers()[1].tap, "features.1");
  EXPECT_FALSE(model.bias_layers()[1].tap_scale.defined());

  // A conv bias replaced by a new tensor is seen too.
  auto conv = features.attr("0").toModule();
  at::Tensor fresh = at::full_like(conv.attr("bias").toTensor().detach(), 0.25);
  conv.register_parameter("bias", fresh, /*is_buffer=*/false);
  EXPECT_TRUE(at::equal(model.bias_layers()[0].bias, fresh));
  EXPECT_FALSE(model.bias_layers()[0].bias.is_same(fresh));  // a copy: the module's tensor stays private
}

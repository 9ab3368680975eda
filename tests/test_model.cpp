#include "helpers.hpp"
#include <torch/cuda.h>
#include <algorithm>
#include <cstdlib>
#include <set>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace testing_salient;
using salient::Autograd;
using salient::Model;
using salient::ReluGradient;

namespace {

// Names of the autograd nodes behind a tensor (the backward a grad() call would run).
std::set<std::string> backward_nodes(const at::Tensor& t) {
  std::set<std::string> names;
  std::vector<torch::autograd::Node*> todo{t.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto* n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n).second) continue;
    names.insert(n->name());
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return names;
}

bool any_batch_norm(const std::set<std::string>& names) {
  return std::any_of(names.begin(), names.end(), [](const std::string& s) { return s.find("BatchNorm") != std::string::npos; });
}

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

TEST(ModelTaps, InputModeRunsTheBatchNormFoldedCopyAndFollowsChangesToTheModule) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  const auto& ref = reference();
  at::Tensor x = ref["input"].clone().requires_grad_(true);
  auto full = model.forward(x, {}, Autograd::Full);
  auto r = model.forward(x, {}, Autograd::Input);
  // Same function, another graph: no BatchNorm left in the backward.
  EXPECT_TRUE(any_batch_norm(backward_nodes(full.output)));
  EXPECT_FALSE(any_batch_norm(backward_nodes(r.output)));
  EXPECT_TRUE(close(r.output, full.output, 1e-5, 1e-5));
  at::Tensor s = r.output.gather(1, ref["targets"].view({-1, 1})).sum();
  at::Tensor g = torch::autograd::grad({s}, {x})[0];
  EXPECT_TRUE(matches_reference(g, "captum_saliency_noabs"));
  EXPECT_TRUE(at::equal(model.forward(x, {}, Autograd::Input).output, r.output));  // built once, reused

  // A BatchNorm statistic written in place, then a weight replaced by another tensor:
  // the folded copy (and infer's) is rebuilt from the module as it now is.
  auto bn = model.module().attr("features").toModule().attr("1").toModule();
  {
    at::NoGradGuard no_grad;
    bn.attr("running_mean").toTensor().add_(0.5);
  }
  at::Tensor now = model.predict(x.detach());
  EXPECT_FALSE(close(now, r.output.detach(), 1e-3, 1e-3));
  EXPECT_TRUE(close(model.forward(x, {}, Autograd::Input).output, now, 1e-5, 1e-5));
  EXPECT_TRUE(close(model.infer(x.detach()), now, 1e-5, 1e-5));
  auto conv = model.module().attr("features").toModule().attr("0").toModule();
  conv.register_parameter("weight", conv.attr("weight").toTensor().detach() * 2, /*is_buffer=*/false);
  now = model.predict(x.detach());
  EXPECT_TRUE(close(model.forward(x, {}, Autograd::Input).output, now, 1e-5, 1e-5));
  EXPECT_TRUE(close(model.infer(x.detach()), now, 1e-5, 1e-5));

  // A randomized copy explains once per block: it runs its own graph, unfolded.
  auto rnd = model.randomized({"fc"}, 3);
  auto rr = rnd.forward(x, {}, Autograd::Input);
  EXPECT_TRUE(any_batch_norm(backward_nodes(rr.output)));
  EXPECT_TRUE(at::equal(rr.output, rnd.forward(x, {}, Autograd::Full).output));
}

TEST(ModelTaps, InputModeTakesTapsAndReluGradientsOnTheFoldedCopy) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  at::Tensor x = reference()["input"].clone().requires_grad_(true);
  // A BatchNorm's output and a ReLU's: the taps of FullGrad and of a CAM.
  const std::vector<std::string> taps = {"features.5", "features.10"};
  for (ReluGradient relu : {ReluGradient::Standard, ReluGradient::Guided, ReluGradient::Deconvnet}) {
    auto full = model.forward(x, taps, Autograd::Full, relu);
    auto folded = model.forward(x, taps, Autograd::Input, relu);
    EXPECT_FALSE(any_batch_norm(backward_nodes(folded.output)));
    ASSERT_EQ(folded.taps.size(), 2u);
    ASSERT_EQ(folded.relus.size(), full.relus.size());
    EXPECT_EQ(folded.relus.size(), relu == ReluGradient::Standard ? 0u : 3u);
    EXPECT_TRUE(close(folded.output, full.output, 1e-5, 1e-5));
    for (size_t i = 0; i < taps.size(); ++i) EXPECT_TRUE(close(folded.taps[i], full.taps[i], 1e-5, 1e-5)) << taps[i];
    salient::clamp_relu_gradients(full);
    salient::clamp_relu_gradients(folded);
    auto gf = torch::autograd::grad({full.output.select(1, 2).sum()}, {x, full.taps[0]});
    auto gi = torch::autograd::grad({folded.output.select(1, 2).sum()}, {x, folded.taps[0]});
    for (size_t i = 0; i < 2; ++i)
      EXPECT_TRUE(close(gi[i], gf[i], 1e-5 * gf[i].abs().max().item<double>(), 1e-4)) << static_cast<int>(relu);
  }
  // Deconvnet's gradient is not guided backprop's (here they differ by half their size):
  // its rewrite survives freezing.
  auto guided = model.forward(x, {}, Autograd::Input, ReluGradient::Guided);
  auto deconv = model.forward(x, {}, Autograd::Input, ReluGradient::Deconvnet);
  salient::clamp_relu_gradients(guided);
  salient::clamp_relu_gradients(deconv);
  at::Tensor gg = torch::autograd::grad({guided.output.select(1, 2).sum()}, {x})[0];
  at::Tensor gd = torch::autograd::grad({deconv.output.select(1, 2).sum()}, {x})[0];
  EXPECT_FALSE(close(gg, gd, 1e-3 * gd.abs().max().item<double>(), 1e-3));
  const auto names = model.frozen_copies();
  for (const char* name : {"folded|standard|features.5|features.10", "folded|guided|features.5|features.10",
                           "folded|deconvnet|features.5|features.10", "folded|guided", "folded|deconvnet"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
}

TEST(ModelTaps, InputModeRunsTheModelsOwnGraphWhenItDetachesAValue) {
  // Freezing drops aten::detach: a folded copy would differentiate through it.
  torch::jit::Module m("StopGradient");
  m.register_parameter("w", at::full({2, 3}, 0.5), false);
  m.define(R"(
def forward(self, x):
    f = torch.flatten(x, 1)[:, :3]
    return torch.matmul(f * f.detach(), self.w.t())
)");
  Model model = Model::from_module(m);
  at::Tensor x = at::arange(1, 5, at::kFloat).view({1, 1, 2, 2}).requires_grad_(true);
  at::Tensor g = torch::autograd::grad({model.forward(x, {}, Autograd::Input).output.select(1, 0).sum()}, {x})[0];
  // d/dx (x · stop(x)) · 0.5 = 0.5 x, not x.
  EXPECT_TRUE(at::allclose(g.flatten(), at::tensor({0.5f, 1.0f, 1.5f, 0.0f})));
  EXPECT_TRUE(model.frozen_copies().empty());
}

TEST(ModelTaps, AnOutputCutFromTheInputIsAnErrorForGradientsAndFineForForwards) {
  // The forward detaches its whole input: no input gradient exists.
  torch::jit::Module m("DetachAll");
  m.register_parameter("w", at::full({2, 3}, 0.5), false);
  m.define(R"(
def forward(self, x):
    f = torch.flatten(x.detach(), 1)[:, :3]
    return torch.matmul(f, self.w.t())
)");
  Model model = Model::from_module(m);
  at::Tensor x = at::rand({2, 1, 2, 2});
  for (Autograd mode : {Autograd::Full, Autograd::Input})
    EXPECT_NE(msg_of([&] { model.forward(x.clone().requires_grad_(true), {}, mode); })
                  .find("its output does not depend on its input through autograd"),
              std::string::npos);
  EXPECT_NE(msg_of([&] { salient::vanilla_gradient(model, x); }).find("input gradients cannot be taken"),
            std::string::npos);
  EXPECT_TRUE(at::allclose(model.predict(x), model.infer(x)));
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

TEST(ModelTaps, RepeatedSingleTapCallsRunAFrozenPrefixWithTheWholeGraphsResults) {
  for (const char* file : {"models/resnet_tiny_traced.pt", "models/resnet_tiny_scripted.pt"}) {
    // body.0.conv2: the rest also reads the block's input (the skip connection).
    for (const char* layer : {"body.0.conv2", "body"}) {
      SCOPED_TRACE(std::string(file) + " " + layer);
      auto model = Model::load(data(file));
      const std::string key = std::string("prefix|") + layer;
      auto has_prefix = [&] {
        auto names = model.frozen_copies();
        return std::find(names.begin(), names.end(), key) != names.end();
      };
      at::manual_seed(3);
      at::Tensor x = at::randn({2, 3, 16, 16});
      at::Tensor before = model.module().forward({x}).toTensor();
      auto first = model.forward(x, {layer}, Autograd::FromTaps);
      EXPECT_FALSE(has_prefix());  // a one-off call does not pay for freezing
      auto second = model.forward(x, {layer}, Autograd::FromTaps);
      EXPECT_TRUE(has_prefix());
      EXPECT_TRUE(close(second.output, first.output, 1e-5, 1e-4));
      EXPECT_TRUE(close(second.taps[0], first.taps[0], 1e-5, 1e-4));
      ASSERT_TRUE(second.taps[0].requires_grad());
      EXPECT_TRUE(second.taps[0].is_leaf());
      at::Tensor g1 = torch::autograd::grad({first.output.select(1, 1).sum()}, {first.taps[0]})[0];
      at::Tensor g2 = torch::autograd::grad({second.output.select(1, 1).sum()}, {second.taps[0]})[0];
      EXPECT_TRUE(close(g2, g1, 1e-6, 1e-4));
      EXPECT_GT(g2.abs().sum().item<double>(), 0);
      auto off = model.forward(x, {layer}, Autograd::Off);
      EXPECT_FALSE(off.output.requires_grad());
      EXPECT_TRUE(close(off.taps[0], first.taps[0], 1e-5, 1e-4));
      // The caller's module keeps its own forward (the copy's class was changed, not its).
      EXPECT_TRUE(at::equal(model.module().forward({x}).toTensor(), before));
      // A parameter written afterwards is seen by the next call: the copy is rebuilt.
      {
        at::NoGradGuard no_grad;
        for (auto p : model.module().parameters()) p.mul_(1.5);
      }
      at::Tensor changed = model.module().forward({x}).toTensor();
      EXPECT_FALSE(at::allclose(changed, before));
      EXPECT_TRUE(close(model.forward(x, {layer}, Autograd::FromTaps).output, changed, 1e-4, 1e-4));
    }
  }
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


TEST(ModelMemory, AForwardAloneIsEstimatedFromTheValuesAliveTogether) {
  // conv -> relu -> conv -> relu -> mean -> linear on [3, 10, 10]: each conv output (8
  // channels, 3200 bytes) lives until the relu after it has read it, so at most two of
  // them are alive at once (6400 bytes). Forward only: twice that plus twice the input
  // (1200 bytes). With autograd every value is kept: four 3200-byte maps, the pooled 32
  // and the 8-byte output, plus two of the largest and four copies of the input.
  torch::jit::Module m("TwoConv");
  m.register_parameter("w1", at::randn({8, 3, 3, 3}), false);
  m.register_parameter("w2", at::randn({8, 8, 3, 3}), false);
  m.register_parameter("fc", at::randn({2, 8}), false);
  m.define(R"(
def forward(self, x):
    a = torch.conv2d(x, self.w1, None, [1, 1], [1, 1])
    b = torch.relu(a)
    c = torch.conv2d(b, self.w2, None, [1, 1], [1, 1])
    d = torch.relu(c)
    return torch.matmul(torch.mean(d, [2, 3]), self.fc.t())
)");
  auto model = Model::from_module(m, "two_conv");
  EXPECT_EQ(model.forward_bytes_per_sample({3, 10, 10}), 2 * 6400 + 2 * 1200);
  EXPECT_EQ(model.bytes_per_sample({3, 10, 10}), 4 * 3200 + 32 + 8 + 2 * 3200 + 4 * 1200);
  at::Tensor x = at::zeros({1, 3, 10, 10});
  EXPECT_EQ(salient::forward_chunk_rows(model, x, 3 * 15200 + 1), 3);
  EXPECT_EQ(salient::forward_chunk_rows(model, x, 100), 1);
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
  // Half or double weights would meet float32 inputs at the first layer.
  for (auto type : {at::kHalf, at::kDouble}) {
    torch::jit::Module m("Typed");
    m.register_parameter("w", at::ones({2, 3}, type), false);
    m.define("def forward(self, x):\n    return torch.flatten(x, 1)[:, :3].to(self.w.dtype).matmul(self.w.t())\n");
    EXPECT_NE(msg_of([&] { Model::from_module(m, "typed"); })
                  .find(std::string("model 'typed' has ") + c10::toString(type) + " parameters; salient explains float32"),
              std::string::npos);
  }
}

TEST(ModelLoad, ADeviceThatIsNotHereIsRefusedWithTheReason) {
  const std::string path = data("reference/smallcnn_traced.pt");
  EXPECT_TRUE(Model::load(path).device().is_cpu());
  EXPECT_NE(msg_of([&] { Model::load(path, c10::Device(c10::kMeta)); }).find("only cpu and cuda are supported"),
            std::string::npos);
  if (torch::cuda::is_available()) GTEST_SKIP() << "a GPU is here: scripts/device-check covers CUDA";
  std::string m = msg_of([&] { Model::load(path, c10::Device(c10::kCUDA, 0)); });
  EXPECT_NE(m.find("device cuda:0 is not available here"), std::string::npos) << m;
}

TEST(ModelLoad, DeviceIsWhereTheModulesParametersAre) {
  auto module = torch::jit::load(data("reference/smallcnn_traced.pt"));
  EXPECT_TRUE(Model::from_module(module).device().is_cpu());
  // Methods run there: a CPU model's maps and targets are on the CPU.
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  auto a = salient::explain(model, reference()["input"], "gradcam");
  EXPECT_TRUE(a.map.device().is_cpu());
  EXPECT_TRUE(a.targets.device().is_cpu());
}

TEST(ModelForward, RejectedInputSizeGivesTheModelsErrorBriefly) {
  auto model = Model::load(data("reference/smallcnn_traced.pt"));
  std::string m = msg_of([&] { model.predict(at::zeros({1, 1, 64, 64})); });
  EXPECT_NE(m.find("failed on input of shape [1, 1, 64, 64]"), std::string::npos) << m;
  EXPECT_NE(m.find("channels"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(ModelForward, OutputMustBeFloatingPointScoresPerSampleThroughEveryRunner) {
  auto scripted = [](const std::string& body) {
    torch::jit::Module m("Out");
    m.define("def forward(self, x):\n    " + body + "\n");
    return Model::from_module(m);
  };
  const at::Tensor x = at::ones({2, 1, 4, 4});
  // (logits, aux): the first element is the scores, as a classifier with an auxiliary head returns.
  Model tuple = scripted("return (torch.flatten(x, 1)[:, :3], x)");
  EXPECT_TRUE(at::equal(tuple.predict(x), at::ones({2, 3})));
  EXPECT_TRUE(at::equal(tuple.infer(x), at::ones({2, 3})));
  // A dict (as Hugging Face models return): its "logits", or its only entry.
  Model dict = scripted("return {\"aux\": x, \"logits\": torch.flatten(x, 1)[:, :2] * 2.0}");
  EXPECT_TRUE(at::equal(dict.predict(x), at::full({2, 2}, 2.0)));
  EXPECT_TRUE(at::equal(dict.infer(x), at::full({2, 2}, 2.0)));
  EXPECT_TRUE(at::equal(scripted("return {\"out\": torch.flatten(x, 1)[:, :3]}").predict(x), at::ones({2, 3})));
  for (auto [body, expected] : std::vector<std::pair<std::string, std::string>>{
           {"return {\"a\": torch.flatten(x, 1), \"b\": torch.flatten(x, 1)}",
            "returned a dict with keys {a, b}; salient takes the scores from its \"logits\" entry or its only one"},
           {"return (torch.flatten(x, 1) > 0).sum(1, keepdim=True)", "returned Long scores; expected floating-point"},
           {"return torch.flatten(x, 1).sum(1)", "returned shape [2] for input [2, 1, 4, 4], expected [N, classes]"},
           {"return torch.flatten(x, 0)[:3].view(1, 3)", "returned shape [1, 3] for input [2, 1, 4, 4]"}}) {
    Model model = scripted(body);
    EXPECT_NE(msg_of([&] { model.predict(x); }).find(expected), std::string::npos) << body;
    EXPECT_NE(msg_of([&] { model.infer(x); }).find(expected), std::string::npos) << body;
  }
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

  // The conv's gradient is read at the BatchNorm it feeds alone, rescaled by the
  // BatchNorm's factor w / sqrt(var + eps) (a tap at the conv would keep the pair from
  // folding); the BatchNorm is read at its own output. A zero factor zeroes the conv's
  // gradient, as it is.
  EXPECT_EQ(first[0].tap, "features.1");
  EXPECT_EQ(first[1].tap, "features.1");
  EXPECT_FALSE(first[1].tap_scale.defined());
  EXPECT_TRUE(at::allclose(model.bias_layers()[0].tap_scale, w / at::sqrt(var + 1e-5), 1e-5, 1e-6));
  {
    at::NoGradGuard g;
    bn.attr("weight").toTensor()[0] = 0.0;
  }
  EXPECT_EQ(model.bias_layers()[0].tap_scale[0].item<float>(), 0.0f);

  // A conv bias replaced by a new tensor is seen too.
  auto conv = features.attr("0").toModule();
  at::Tensor fresh = at::full_like(conv.attr("bias").toTensor().detach(), 0.25);
  conv.register_parameter("bias", fresh, /*is_buffer=*/false);
  EXPECT_TRUE(at::equal(model.bias_layers()[0].bias, fresh));
  EXPECT_FALSE(model.bias_layers()[0].bias.is_same(fresh));  // a copy: the module's tensor stays private
}

TEST(Precision, NativeBf16IsReadFromTheCpuFeatureFlagsOfX86AndArm) {
  // x86: AVX512-BF16 or AMX-BF16 on a "flags" line; a plain AVX-512 CPU emulates bf16.
  EXPECT_TRUE(salient::cpuinfo_has_native_bf16("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"));
  EXPECT_TRUE(salient::cpuinfo_has_native_bf16("flags\t\t: fpu amx_tile amx_bf16\n"));
  EXPECT_FALSE(salient::cpuinfo_has_native_bf16("model name\t: Intel Xeon\nflags\t\t: fpu avx512f avx512bw avx512_vnni\n"));
  // Arm: "bf16" among the Features; the word must match whole, wherever it appears.
  EXPECT_TRUE(salient::cpuinfo_has_native_bf16("Features\t: fp asimd sve bf16 i8mm\n"));
  EXPECT_FALSE(salient::cpuinfo_has_native_bf16("Features\t: fp asimd sve svebf16x\n"));
  EXPECT_FALSE(salient::cpuinfo_has_native_bf16("model name\t: bf16 avx512_bf16 in a name, not a flag\n"));
  EXPECT_FALSE(salient::cpuinfo_has_native_bf16(""));
}

#if defined(__GLIBC__)
TEST(Allocator, RetainFreedMemoryServesLargeTensorsFromTheHeapAndKeepsThem) {
  for (const char* v : {"MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                        "GLIBC_TUNABLES"})
    if (std::getenv(v) != nullptr) GTEST_SKIP() << v << " is set: the environment's malloc settings apply";
  ASSERT_TRUE(salient::retain_freed_memory());
  const size_t mapped_before = mallinfo2().hblkhd;
  size_t heap_in_use = 0;
  {
    at::Tensor big = at::ones({64 << 20 >> 2});  // 64 MiB: glibc would mmap it by default
    EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "a 64 MiB tensor still came from mmap";
    heap_in_use = mallinfo2().uordblks;
    EXPECT_GE(heap_in_use, size_t(64) << 20);
    EXPECT_EQ(big.sum().item<float>(), float(16 << 20));
  }
  // Freed, it stays in the heap (nothing trimmed), ready for the next pass.
  EXPECT_LE(mallinfo2().uordblks + (size_t(64) << 20), heap_in_use + (size_t(1) << 20));
  EXPECT_GE(mallinfo2().arena, size_t(64) << 20);
}

TEST(Allocator, AMallocSettingInTheEnvironmentWins) {
  ::setenv("MALLOC_TOP_PAD_", "0", 1);
  EXPECT_FALSE(salient::retain_freed_memory());
  ::unsetenv("MALLOC_TOP_PAD_");
}
#endif

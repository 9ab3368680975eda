// Model::infer's oneDNN plan (src/model/onednn_plan.cpp): same outputs as the model's own
// graph, on the layer kinds it runs itself and on those it leaves to LibTorch.
#include "helpers.hpp"
#include "model/onednn_plan.hpp"

using namespace testing_salient;
using salient::Model;

namespace {

torch::jit::Module conv_module(const std::string& name, const std::string& forward,
                               const std::vector<std::pair<std::string, std::vector<int64_t>>>& params) {
  torch::jit::Module m(name);
  m.register_attribute("training", c10::BoolType::get(), false);
  at::manual_seed(7);
  for (const auto& p : params) m.register_parameter(p.first, at::randn(p.second) * 0.3, false);
  m.define(forward);
  return m;
}

std::string expected_runner() {
  return salient::model::onednn_plan_available() ? "onednn" : "torchscript (this build has no oneDNN)";
}

// A stem with stride 2 on 3 channels, max-pooling in ceil mode, two Winograd-sized 3x3
// convolutions (one without bias) whose ReLU and residual sum fuse, a grouped dilated
// convolution, one with 8 output channels (not a multiple of 16), global pooling and a
// linear head.
const char* kResidualNet = R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.w1, self.b1, [2, 2], [1, 1], [1, 1], 1))
    y = torch.max_pool2d(y, [3, 3], [2, 2], [1, 1], [1, 1], True)
    z = torch.relu(torch.conv2d(y, self.w2, self.b2, [1, 1], [1, 1], [1, 1], 1))
    z = torch.conv2d(z, self.w3, None, [1, 1], [1, 1], [1, 1], 1)
    y = torch.relu(z + y)
    g = torch.relu(torch.conv2d(y, self.w4, self.b4, [1, 1], [2, 2], [2, 2], 4))
    e = torch.relu(torch.conv2d(g, self.w5, self.b5, [1, 1], [0, 0], [1, 1], 1))
    p = torch.adaptive_avg_pool2d(e, [1, 1])
    return torch.matmul(torch.flatten(p, 1), self.fc.t())
)";

// A net of 16-channel 3x3 convolutions (w, b) that the plan refuses: infer_runner names
// `why` (in builds with oneDNN), and infer still gives the model's own graph's answer.
void expect_refused_yet_exact(const std::string& name, const char* forward, const std::string& why) {
  Model model = Model::from_module(conv_module(name, forward, {{"w", {16, 16, 3, 3}}, {"b", {16}}}));
  if (salient::model::onednn_plan_available())
    EXPECT_NE(model.infer_runner().find(why), std::string::npos) << model.infer_runner();
  at::Tensor x = at::randn({2, 16, 8, 8});
  EXPECT_TRUE(close(model.infer(x), model.predict(x), 1e-5, 1e-4));
}

const std::vector<std::pair<std::string, std::vector<int64_t>>> kResidualParams = {
    {"w1", {16, 3, 3, 3}}, {"b1", {16}},         {"w2", {16, 16, 3, 3}}, {"b2", {16}}, {"w3", {16, 16, 3, 3}},
    {"w4", {16, 4, 3, 3}}, {"b4", {16}},         {"w5", {8, 16, 1, 1}},  {"b5", {8}},  {"fc", {5, 8}}};

}  // namespace

TEST(OneDnnPlan, FusedWinogradResidualNetMatchesTheModelsOwnGraphAtEveryShape) {
  Model model = Model::from_module(conv_module("ResidualNet", kResidualNet, kResidualParams));
  EXPECT_EQ(model.infer_runner(), expected_runner());
  // Several batch sizes and image sizes (odd ones: the ceil-mode pool pads on the right):
  // the plan builds primitives per shape and keeps them.
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 3, 32, 32}, {5, 3, 32, 32}, {2, 3, 27, 41}, {1, 3, 32, 32}}) {
    at::Tensor x = at::randn(shape);
    at::Tensor before = x.clone();
    at::Tensor got = model.infer(x);
    EXPECT_TRUE(close(got, model.predict(x), 1e-5, 1e-4)) << "shape " << shape;
    EXPECT_TRUE(at::equal(x, before));  // the caller's input is never written
  }
}

TEST(OneDnnPlan, OutputsHeldByTheCallerSurviveLaterRunsAtOtherBatchSizes) {
  // The output is the plain copy of a 16-channel map (256 KiB a sample, on the plan's
  // pooled buffers) seen through flatten: each block goes back to the pool only when the
  // caller drops the tensor, whatever runs in between.
  const char* src = R"(
def forward(self, x):
    return torch.flatten(torch.relu(torch.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1)), 1)
)";
  Model model = Model::from_module(conv_module("ConvMap", src, {{"w", {16, 3, 3, 3}}, {"b", {16}}}));
  EXPECT_EQ(model.infer_runner(), expected_runner());
  std::vector<at::Tensor> xs, outs;
  for (int64_t n : {3, 5, 3, 4, 5, 1}) {
    xs.push_back(at::randn({n, 3, 64, 64}));
    outs.push_back(model.infer(xs.back()));
  }
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_TRUE(close(outs[i], model.predict(xs[i]), 1e-5, 1e-4)) << "run " << i;
}

TEST(OneDnnPlan, ForwardOnlyMethodsHandTheBuffersBackWhenTheyReturn) {
  // Kept between infer calls (chunks reuse them), released when a method's chunks are
  // done, so a gradient method that runs next has the memory.
  if (!salient::model::onednn_plan_available()) GTEST_SKIP() << "this build has no oneDNN";
  Model model = Model::from_module(conv_module("ResidualNet", kResidualNet, kResidualParams));
  at::Tensor x = at::randn({1, 3, 64, 64});
  model.infer(x.expand({8, 3, 64, 64}).contiguous());
  EXPECT_GT(model.buffer_bytes(), 0);
  model.release_buffers();
  EXPECT_EQ(model.buffer_bytes(), 0);
  auto a = salient::occlusion(model, x, salient::Target::index(1), salient::OcclusionOptions().window(16).stride(8));
  EXPECT_GT(a.forward_samples, 8);
  EXPECT_EQ(model.buffer_bytes(), 0);
  salient::infidelity(model, x, a.map, salient::Target::index(1));
  EXPECT_EQ(model.buffer_bytes(), 0);
}

TEST(OneDnnPlan, InPlaceSumsAndReluOnTheInputLeaveTheCallersTensorAlone) {
  // x + conv(x) written in place: the sum's operand is the caller's tensor.
  const char* src = R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1)
    y += x
    y = torch.relu_(y)
    return torch.flatten(torch.adaptive_avg_pool2d(y, [1, 1]), 1)
)";
  Model model = Model::from_module(conv_module("SkipOnInput", src, {{"w", {16, 16, 3, 3}}, {"b", {16}}}));
  EXPECT_EQ(model.infer_runner(), expected_runner());
  at::Tensor x = at::randn({3, 16, 12, 12});
  at::Tensor before = x.clone();
  EXPECT_TRUE(close(model.infer(x), model.predict(before), 1e-5, 1e-4));
  EXPECT_TRUE(at::equal(x, before));
}

TEST(OneDnnPlan, AGraphThatReadsAValueAfterWritingItInPlaceRunsOnLibTorch) {
  const char* src = R"(
def forward(self, x):
    y = torch.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1)
    z = y.clone()
    y.relu_()
    return torch.flatten(torch.adaptive_avg_pool2d(y + z, [1, 1]), 1)
)";
  expect_refused_yet_exact("ReadAfterWrite", src, "writes to a value read later");
}

TEST(OneDnnPlan, ASumOverOperandsOfDifferentShapesRunsTheGraphItself) {
  // The sum's operands broadcast ([N, 16, H, W] + [N, 16, 1, 1]): no fused post-op can add
  // them, so this input runs the frozen graph as it is.
  const char* src = R"(
def forward(self, x):
    s = torch.adaptive_avg_pool2d(x, [1, 1])
    y = torch.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1)
    return torch.flatten(torch.adaptive_avg_pool2d(torch.relu(y + s), [1, 1]), 1)
)";
  Model model = Model::from_module(conv_module("Broadcast", src, {{"w", {16, 16, 3, 3}}, {"b", {16}}}));
  EXPECT_EQ(model.infer_runner(), expected_runner());
  at::Tensor x = at::randn({2, 16, 8, 8});
  EXPECT_TRUE(close(model.infer(x), model.predict(x), 1e-5, 1e-4));
}

TEST(OneDnnPlan, OpsOutsideThePlanInsideTheNetworkLeaveItToLibTorch) {
  // A sigmoid between convolutions would convert the blocked layout back and forth.
  const char* src = R"(
def forward(self, x):
    y = torch.sigmoid(torch.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1))
    y = torch.sigmoid(torch.conv2d(y, self.w, self.b, [1, 1], [1, 1], [1, 1], 1))
    y = torch.conv2d(y, self.w, self.b, [1, 1], [1, 1], [1, 1], 1)
    return torch.flatten(torch.adaptive_avg_pool2d(y, [1, 1]), 1)
)";
  expect_refused_yet_exact("Sigmoids", src, "ops outside the plan");
}

TEST(OneDnnPlan, TheDemoAndReferenceModelsRunOnThePlanAndAgreeWithTheirGraphs) {
  const std::vector<std::pair<std::string, at::Tensor>> cases = {
      {std::string(SALIENT_SOURCE_DIR) + "/models/demo/fashion96.pt", at::randn({4, 3, 96, 96})},
      {data("reference/smallcnn_traced.pt"), reference()["input"]}};
  for (const auto& c : cases) {
    Model model = Model::load(c.first);
    EXPECT_EQ(model.infer_runner(), expected_runner()) << c.first;
    at::Tensor ref = model.predict(c.second);
    EXPECT_TRUE(close(model.infer(c.second), ref, 1e-5 * ref.abs().max().item<double>(), 1e-4)) << c.first;
  }
}

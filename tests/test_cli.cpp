// The salient command line: the .npy contract other tools rely on, and one clear error
// line with exit code 2 for each kind of bad input.
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "helpers.hpp"
#include <torch/cuda.h>

using namespace testing_salient;
using salient::Model;
using salient::Target;
namespace fs = std::filesystem;

namespace {

std::string ref_model() { return data("reference/smallcnn_traced.pt"); }

size_t files_in(const std::string& dir) {
  if (!fs::exists(dir)) return 0;
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

// A bad input: exit code 2, one error line naming the problem, no output files.
void expect_bad_input(const std::string& args, const std::string& out_dir, const std::string& expected) {
  CliRun r = salient_cli(args + " --out " + out_dir);
  EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 1u) << args << "\n" << r.out;
  EXPECT_EQ(lines[0].rfind("salient: error: ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(expected), std::string::npos) << "expected '" << expected << "' in: " << lines[0];
  EXPECT_EQ(files_in(out_dir), 0u) << args;
}

}  // namespace

TEST(Cli, ExplainWritesTheNpyContractOnTheReferenceModel) {
  std::string dir = temp_dir("cli_contract");
  salient::io::write_npy(dir + "/batch.npy", reference()["input"]);
  std::string out = dir + "/out";
  CliRun r = salient_cli("explain --model " + ref_model() + " --input " + dir +
                      "/batch.npy --method vanilla,smoothgrad,gradcam --layer features.10 --targets 0,1,2,3 "
                      "--n-samples 4 --save npy,json --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  at::Tensor vanilla = salient::io::read_npy(out + "/batch.vanilla.npy");
  at::Tensor smooth = salient::io::read_npy(out + "/batch.smoothgrad.npy");
  at::Tensor cam = salient::io::read_npy(out + "/batch.gradcam.npy");
  EXPECT_TRUE(matches_reference(vanilla, "captum_saliency_noabs"));
  EXPECT_EQ(smooth.sizes(), (std::vector<int64_t>{4, 3, 64, 64}));
  EXPECT_TRUE(at::isfinite(smooth).all().item<bool>());
  // CAM contract: [N,1,H,W], upsampled (bilinear, align_corners=false), after ReLU, not normalised.
  at::Tensor expected = at::upsample_bilinear2d(reference()["captum_layer_gradcam_relu"], {64, 64}, false);
  EXPECT_TRUE(close(cam, expected, 2e-8, 1e-4));
  EXPECT_FALSE(fs::exists(out + "/batch_0.panel.png"));  // --save without png

  std::ifstream f(out + "/summary.json");
  auto s = nlohmann::json::parse(f);
  ASSERT_EQ(s["images"].size(), 4u);
  at::Tensor pred = reference()["logits"].argmax(1);
  for (int i = 0; i < 4; ++i) {
    const auto& img = s["images"][i];
    EXPECT_EQ(img["index"], i);
    EXPECT_EQ(img["target"], i);
    EXPECT_EQ(img["predicted"], pred[i].item<int64_t>());
    EXPECT_GT(img["probability"].get<double>(), 0.0);
    EXPECT_EQ(img["methods"]["gradcam"]["layer"], "features.10");
    EXPECT_EQ(img["methods"]["smoothgrad"]["samples"], 4);
    EXPECT_TRUE(img["timings_ms"].contains("gradcam"));
  }
}

TEST(Cli, ExplainImagesWritesPanelsLabelsAndChoosesTheLayer) {
  std::string dir = temp_dir("cli_images");
  cv::Mat img(80, 100, CV_8UC3);
  cv::randu(img, 0, 255);
  salient::io::write_png(dir + "/cat.png", img);
  { std::ofstream(dir + "/labels.txt") << "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n"; }
  std::string out = dir + "/out";
  CliRun r = salient_cli("explain --model " + ref_model() + " --image " + dir + "/cat.png --preset none --size 64x64 " +
                      "--labels " + dir + "/labels.txt --method gradcam,vanilla --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("CAM methods: using layer 'features'"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("have no output to use"), std::string::npos) << r.out;  // every module is tappable
  EXPECT_EQ(salient::io::read_npy(out + "/cat.gradcam.npy").sizes(), (std::vector<int64_t>{1, 1, 64, 64}));
  EXPECT_EQ(salient::io::read_npy(out + "/cat.vanilla.npy").sizes(), (std::vector<int64_t>{1, 3, 64, 64}));
  cv::Mat panel = salient::io::read_image(out + "/cat.panel.png");
  EXPECT_EQ(panel.cols, 8 + 3 * (224 + 8));
  EXPECT_TRUE(fs::exists(out + "/cat.gradcam.png"));
  std::ifstream f(out + "/summary.json");
  auto s = nlohmann::json::parse(f);
  const auto& j = s["images"][0];
  EXPECT_EQ(j["stem"], "cat");
  const std::vector<std::string> names = {"zero", "one", "two", "three", "four",
                                         "five", "six", "seven", "eight", "nine"};
  EXPECT_EQ(j["predicted_label"], names[j["predicted"].get<int>()]);
  EXPECT_EQ(j["methods"]["gradcam"]["layer_auto"], true);
}

TEST(Cli, BadImagesAreOneLineErrorsWithExitCode2) {
  std::string dir = temp_dir("cli_bad_images");
  std::ofstream(dir + "/empty.png").close();
  { std::ofstream(dir + "/notes.png") << "just text\n"; }
  cv::Mat img(32, 32, CV_8UC3, cv::Scalar(1, 2, 3));
  salient::io::write_png(dir + "/good.png", img);
  std::string bytes;
  {
    std::ifstream g(dir + "/good.png", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(g), {});
  }
  { std::ofstream(dir + "/cut.png", std::ios::binary) << bytes.substr(0, bytes.size() - 20); }
  std::string base = "explain --model " + ref_model() + " --preset none --method vanilla --image ";
  expect_bad_input(base + dir + "/missing.png", dir + "/o1", "image '" + dir + "/missing.png' not found");
  expect_bad_input(base + dir + "/empty.png", dir + "/o2", "is empty");
  expect_bad_input(base + dir + "/notes.png", dir + "/o3", "is not a PNG or JPEG file");
  expect_bad_input(base + dir + "/cut.png", dir + "/o4", "corrupt or truncated PNG");
  // The good image before a bad one is not written either.
  expect_bad_input(base + dir + "/good.png " + dir + "/cut.png", dir + "/o5", "cut.png");
  // --size takes HxW: its errors show that form, not the CxHxW of --input-size.
  expect_bad_input(base + dir + "/good.png --size 0x10", dir + "/o6", "--size: '0x10' is not a list of sizes like 224x224");
  expect_bad_input(base + dir + "/good.png --size 3x32x32", dir + "/o7", "--size: expected HxW like 224x224, got '3x32x32'");
}

TEST(Cli, BadModelsLayersAndTargetsAreOneLineErrors) {
  std::string dir = temp_dir("cli_bad_model");
  salient::io::write_npy(dir + "/x.npy", reference()["input"]);
  { std::ofstream(dir + "/model.pt") << "not a model"; }
  std::string x = " --input " + dir + "/x.npy";
  expect_bad_input("explain --model " + dir + "/model.pt" + x, dir + "/o1", "is not a TorchScript model");
  expect_bad_input("explain --model " + dir + "/none.pt" + x, dir + "/o2", "not found");
  // A misspelt command is named, with the commands there are.
  expect_bad_input("explian --model " + ref_model() + x, dir + "/o2b",
                   "unknown command 'explian'; use explain, layers, evaluate, batch, report, demo");
  expect_bad_input("explain --model " + ref_model() + x + " --method gradcam --layer features.99", dir + "/o3",
                   "unknown layer 'features.99'");
  CliRun r = salient_cli("explain --model " + ref_model() + x + " --method gradcam --layer features.99 --out " + dir + "/o3");
  EXPECT_NE(r.out.find("closest: features.9"), std::string::npos) << r.out;
  expect_bad_input("explain --model " + ref_model() + x + " --method gradcam --layer fc", dir + "/o4",
                   "layer 'fc' outputs [4, 10]; CAM methods need a 4-D");
  expect_bad_input("explain --model " + ref_model() + x + " --method vanilla --target 10", dir + "/o5",
                   "target 10 out of range: the model has 10 classes");
  expect_bad_input("explain --model " + ref_model() + x + " --method vanilla --targets 1,2", dir + "/o6",
                   "--targets has 2 values for 4 input(s)");
  expect_bad_input("explain --model " + ref_model() + x + " --method magic", dir + "/o7", "unknown method 'magic'");
  expect_bad_input("explain --model " + ref_model() + x + " --method vanilla --device gpu", dir + "/o8",
                   "--device 'gpu': expected cpu, cuda or cuda:N");
  if (!torch::cuda::is_available())
    expect_bad_input("explain --model " + ref_model() + x + " --method vanilla --device cuda:0", dir + "/o9",
                     "device cuda:0 is not available here");
}

TEST(Cli, BadTensorsAndNonFiniteGradientsAreOneLineErrors) {
  std::string dir = temp_dir("cli_bad_tensor");
  salient::io::write_npy(dir + "/gray.npy", at::zeros({1, 1, 64, 64}));
  at::Tensor nan = reference()["input"].clone();
  nan[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  salient::io::write_npy(dir + "/nan.npy", nan);
  salient::io::write_npy(dir + "/zeros.npy", at::zeros({1, 3, 4, 4}));
  std::string m = "explain --model " + ref_model() + " --method vanilla --input ";
  expect_bad_input(m + dir + "/gray.npy", dir + "/o1", "failed on input of shape [1, 1, 64, 64]");
  expect_bad_input(m + dir + "/nan.npy", dir + "/o2", "contains non-finite values");
  expect_bad_input("explain --model " + data("models/sqrt_scripted.pt") + " --method vanilla --input " + dir +
                       "/zeros.npy",
                   dir + "/o3", "non-finite values (NaN or Inf) in the input gradient");
}

TEST(Cli, UnwritableOutputDirectoryIsAnError) {
  std::string dir = temp_dir("cli_unwritable");
  salient::io::write_npy(dir + "/x.npy", reference()["input"]);
  { std::ofstream(dir + "/file") << "x"; }
  CliRun r = salient_cli("explain --model " + ref_model() + " --method vanilla --input " + dir + "/x.npy --out " + dir +
                      "/file/sub");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("output directory '" + dir + "/file/sub' cannot be created"), std::string::npos) << r.out;
}

TEST(Cli, BadUsageExitsWith2AndHelpWith0) {
  EXPECT_EQ(salient_cli("explain --input x.npy --out o").code, 2);  // --model missing
  EXPECT_EQ(salient_cli("explain --model m.pt --out o --frobnicate").code, 2);
  EXPECT_EQ(salient_cli("").code, 2);
  for (const char* sub : {"explain", "layers", "demo"}) {
    CliRun r = salient_cli(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << r.out;
  }
}

TEST(Cli, TheDefaultCamLayerLineNamesModulesCalledInsideControlFlow) {
  // conv2 runs only inside an `if`: it cannot be tapped, so the default is conv1, and the
  // user is told why a deeper layer was not chosen.
  auto conv = [](const std::string& name, int64_t in, int64_t out) {
    torch::jit::Module c(name);
    c.register_parameter("weight", at::randn({out, in, 3, 3}) * 0.2, false);
    c.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, None, [1, 1], [1, 1])\n");
    return c;
  };
  torch::jit::Module m("Branchy");
  m.register_module("conv1", conv("Conv2d", 3, 4));
  m.register_module("conv2", conv("Conv2d", 4, 4));
  m.define(R"(
def forward(self, x):
    h = torch.relu(self.conv1.forward(x))
    if x.size(2) > 4:
        h = torch.relu(self.conv2.forward(h))
    return torch.mean(h, [2, 3])
)");
  std::string dir = temp_dir("cli_branchy");
  m.save(dir + "/branchy.pt");
  salient::io::write_npy(dir + "/x.npy", at::rand({1, 3, 8, 8}));
  CliRun r = salient_cli("explain --model " + dir + "/branchy.pt --input " + dir + "/x.npy --method gradcam --out " +
                         dir + "/out");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("CAM methods: using layer 'conv1' (last module with a spatial 4-D output); pass --layer to "
                       "choose another; 1 module(s) have no output to use (inside control flow, or not called): "
                       "conv2 (salient layers lists them)"),
            std::string::npos)
      << r.out;
}

TEST(Cli, LayersPrintsPathsShapesAndTheDefaultCamLayer) {
  CliRun r = salient_cli("layers " + ref_model() + " --input-size 3x64x64");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("features.10  ReLU"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[1, 64, 16, 16]  <- default CAM layer"), std::string::npos) << r.out;
  CliRun j = salient_cli("layers " + ref_model() + " --input-size 3x64x64 --json");
  auto arr = nlohmann::json::parse(j.out);
  EXPECT_EQ(arr.size(), 14u);
  EXPECT_EQ(arr[11]["path"], "features.10");
  EXPECT_EQ(arr[11]["shape"], (std::vector<int64_t>{1, 64, 16, 16}));
  // --model names the file as in every other subcommand.
  CliRun named = salient_cli("layers --model " + ref_model() + " --input-size 3x64x64 --json");
  ASSERT_EQ(named.code, 0) << named.out;
  EXPECT_EQ(nlohmann::json::parse(named.out), arr);
  CliRun bad = salient_cli("layers " + ref_model() + " --input-size 3x64");
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(bad.lines().size(), 1u) << bad.out;
  EXPECT_NE(bad.out.find("--input-size: expected CxHxW"), std::string::npos) << bad.out;
}

TEST(Cli, DemoExplainsTheShippedModelAndGradCamFindsTheItems) {
  std::string out = temp_dir("cli_demo") + "/demo";
  CliRun r = salient_cli("demo --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  // 16 panels and an overview, and the hit counts per method.
  size_t panels = 0;
  for (const auto& e : fs::directory_iterator(out)) panels += e.path().string().find(".panel.png") != std::string::npos;
  EXPECT_EQ(panels, 16u);
  EXPECT_TRUE(fs::exists(out + "/overview.png"));
  auto pos = r.out.find("  gradcam     ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  int hits = std::stoi(r.out.substr(pos + 14));
  // Grad-CAM's peak lands on the item for (nearly) every sample of the task.
  EXPECT_GE(hits, 14) << r.out;
}

TEST(Cli, MethodAllRunsEveryMethodWritesItsMapAndTheIgDelta) {
  std::string dir = temp_dir("cli_all");
  salient::io::write_npy(dir + "/batch.npy", reference()["input"].narrow(0, 0, 2));
  std::string out = dir + "/out";
  CliRun r = salient_cli("explain --model " + ref_model() + " --input " + dir +
                         "/batch.npy --method all --targets 0,1 --n-steps 8 --samples 2 --masks 16 --window 16 "
                         "--stride 16 --top-k 4 --save npy,json --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(out + "/summary.json");
  auto s = nlohmann::json::parse(f);
  ASSERT_EQ(s["methods"].size(), salient::methods().size());
  for (const auto& m : salient::methods()) {
    at::Tensor map = salient::io::read_npy(out + "/batch." + m.name + ".npy");
    std::vector<int64_t> shape{2, m.channels ? 3 : 1, 64, 64};
    EXPECT_EQ(map.sizes(), shape) << m.name;
    EXPECT_TRUE(at::isfinite(map).all().item<bool>()) << m.name;
    EXPECT_GT(map.abs().max().item<double>(), 0.0) << m.name;
    EXPECT_TRUE(s["images"][0]["timings_ms"].contains(m.name)) << m.name;
  }
  // The CLI's maps are the library's: IG with 8 Gauss-Legendre steps, Grad-CAM++.
  salient::ExplainSettings settings;
  settings.n_steps = 8;
  auto x = reference()["input"].narrow(0, 0, 2);
  auto ig = salient::explain(Model::load(ref_model()), x, "integrated_gradients", Target::per_sample({0, 1}), settings);
  EXPECT_TRUE(close(salient::io::read_npy(out + "/batch.integrated_gradients.npy"), ig.map, 1e-9, 1e-5));
  for (int i = 0; i < 2; ++i) {
    const auto& m = s["images"][i]["methods"]["integrated_gradients"];
    EXPECT_EQ(m["n_steps"], 8);
    EXPECT_EQ(m["integration"], "gausslegendre");
    EXPECT_NEAR(m["delta"].get<double>(), ig.delta[i].item<double>(), 1e-5);
  }
  // Gradient methods share one forward and two backward passes (the guided one included).
  EXPECT_GE(s["shared_pass"].size(), 12u);
  EXPECT_EQ(s["methods"]["rise"]["score"], "probability");
  EXPECT_EQ(s["methods"]["faster_scorecam"]["top_k"], 4.0);
}

TEST(Cli, MethodFlagsReachTheirOptions) {
  std::string dir = temp_dir("cli_flags");
  at::Tensor x = reference()["input"].narrow(0, 0, 1);
  salient::io::write_npy(dir + "/x.npy", x);
  salient::io::write_npy(dir + "/base.npy", at::full({1, 3, 64, 64}, 0.25));
  std::string run = "explain --model " + ref_model() + " --input " + dir + "/x.npy --target 3 --save npy,json ";
  ASSERT_EQ(salient_cli(run + "--method vargrad --base integrated_gradients --samples 3 --n-steps 4 --seed 5 "
                              "--integration riemann_middle --baseline " + dir + "/base.npy --out " + dir + "/a").code, 0);
  ASSERT_EQ(salient_cli(run + "--method occlusion --window 16 --stride 8 --baseline 0.5 --out " + dir + "/b").code, 0);
  ASSERT_EQ(salient_cli(run + "--method rise --masks 32 --cell 16 --keep 0.3 --seed 2 --score logit --out " + dir +
                        "/c").code, 0);
  ASSERT_EQ(salient_cli(run + "--method occlusion --window 16 --stride 8 --precision bf16 --out " + dir + "/d").code, 0);
  Model model = Model::load(ref_model());
  auto expect = [&](const std::string& file, const salient::Attribution& a) {
    EXPECT_TRUE(close(salient::io::read_npy(file), a.map, 1e-9, 1e-5)) << file;
  };
  salient::IntegratedGradientsOptions ig;
  ig.n_steps(4).integration(salient::Integration::RiemannMiddle).baseline(at::full({1, 3, 64, 64}, 0.25));
  expect(dir + "/a/x.vargrad.npy",
         salient::smoothgrad(model, x, Target::index(3),
                             salient::SmoothGradOptions()
                                 .n_samples(3)
                                 .seed(5)
                                 .aggregation(salient::NoiseAggregation::Variance)
                                 .base([ig](const Model& m, const at::Tensor& rows, const Target& t) {
                                   return salient::integrated_gradients(m, rows, t, ig);
                                 })));
  expect(dir + "/b/x.occlusion.npy",
         salient::occlusion(model, x, Target::index(3), salient::OcclusionOptions().window(16).stride(8).baseline(0.5)));
  expect(dir + "/c/x.rise.npy", salient::rise(model, x, Target::index(3),
                                             salient::RiseOptions().n_masks(32).cell(16).keep(0.3).seed(2).score(
                                                 salient::Score::Logit)));
  expect(dir + "/d/x.occlusion.npy",
         salient::occlusion(model, x, Target::index(3),
                            salient::OcclusionOptions().window(16).stride(8).precision(salient::Precision::BFloat16)));
}

TEST(Cli, BadMethodSettingsAreOneLineErrors) {
  std::string dir = temp_dir("cli_bad_settings");
  salient::io::write_npy(dir + "/x.npy", reference()["input"].narrow(0, 0, 1));
  std::string run = "explain --model " + ref_model() + " --input " + dir + "/x.npy ";
  expect_bad_input(run + "--method scorecam --layer fc", dir + "/o1", "layer 'fc' outputs [1, 10]; CAM methods need a 4-D");
  expect_bad_input(run + "--method reciprocam --layer fc", dir + "/o2", "CAM methods need a 4-D");
  expect_bad_input(run + "--method occlusion --window 65", dir + "/o3", "occlusion: window 65 is larger than the image");
  expect_bad_input(run + "--method integrated_gradients --n-steps 0", dir + "/o4", "n_steps must be >= 1, got 0");
  expect_bad_input(run + "--method smoothgrad --base gradcam", dir + "/o5",
                   "unknown base method 'gradcam' for the noise tunnel; use one of: vanilla,");
  expect_bad_input(run + "--method integrated_gradients --baseline fog", dir + "/o6", "unknown baseline 'fog'");
  expect_bad_input(run + "--method occlusion --baseline blur", dir + "/o7", "occlusion: baseline must be zero or a number");
  expect_bad_input(run + "--method rise --keep 1.5", dir + "/o8", "keep must be in (0, 1]");
  expect_bad_input(run + "--method all,vanilla", dir + "/o9", "'all' cannot be combined");
  expect_bad_input(run + "--method integrated_gradients --integration simpson", dir + "/o10", "unknown integration 'simpson'");
  expect_bad_input(run + "--method occlusion --precision half", dir + "/o11", "unknown precision 'half'");
}

TEST(Cli, EvaluateWritesSummaryTablesPerImageLinesAndPlots) {
  std::string dir = temp_dir("cli_evaluate");
  salient::io::write_npy(dir + "/x.npy", reference()["input"].narrow(0, 0, 3));
  {
    std::ofstream m(dir + "/manifest.jsonl");
    m << "{\"input\": \"x.npy\", \"index\": 0, \"target\": 0, \"box\": [10, 10, 30, 40]}\n"
      << "{\"input\": \"x.npy\", \"index\": 1, \"box\": [0, 0, 63, 63]}\n"
      << "\n"
      << "{\"input\": \"x.npy\", \"index\": 2, \"target\": 2, \"box\": [40, 40, 50, 50]}\n";
  }
  std::string out = dir + "/out";
  CliRun r = salient_cli("evaluate --model " + ref_model() + " --data " + dir +
                         "/manifest.jsonl --methods gradcam,vanilla,integrated_gradients --n-steps 4 --metrics "
                         "deletion,insertion,pointing,energy,infidelity,sensitivity,completeness,sanity "
                         "--step 0.1 --sanity-images 2 --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(out + "/summary.json");
  auto s = nlohmann::json::parse(f);
  EXPECT_EQ(s["integrated_gradients"]["completeness"]["n"], 3);
  EXPECT_FALSE(s["gradcam"].contains("completeness"));
  for (const char* m : {"gradcam", "vanilla", "integrated_gradients"}) {
    for (const char* k : {"deletion", "insertion", "pointing", "energy", "infidelity", "sensitivity"}) {
      ASSERT_TRUE(s[m].contains(k)) << m << " " << k;
      EXPECT_EQ(s[m][k]["n"], 3) << m << " " << k;
    }
    EXPECT_EQ(s[m]["sanity_spearman_abs"]["n"], 2);
    const double p = s[m]["pointing"]["mean"].get<double>();
    EXPECT_TRUE(p == 0.0 || std::abs(p - 1.0 / 3) < 1e-9 || std::abs(p - 2.0 / 3) < 1e-9 || p == 1.0) << p;
  }
  // The second image's box is the whole input: every map points into it.
  std::ifstream pi(out + "/per_image.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(pi, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1]["methods"]["gradcam"]["pointing"], 1.0);
  EXPECT_NEAR(rows[1]["methods"]["gradcam"]["energy"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(rows[0]["target"], 0);
  // Deletion AUC in the CLI equals the library's on the same map.
  Model model = Model::load(ref_model());
  at::Tensor x = reference()["input"].narrow(0, 2, 1);
  auto cam = salient::gradcam(model, x, Target::index(2));
  auto del = salient::deletion(model, x, cam.map, Target::index(2), salient::PerturbationCurveOptions().step_fraction(0.1));
  EXPECT_NEAR(rows[2]["methods"]["gradcam"]["deletion"].get<double>(), del.auc[0].item<double>(), 1e-6);
  for (const char* file : {"summary.md", "summary.csv", "deletion.png", "insertion.png", "sanity.png", "sanity.json"})
    EXPECT_TRUE(fs::exists(out + "/" + file)) << file;
  EXPECT_GE(salient::io::read_image(out + "/deletion.png").cols, 720);  // wider when legend names need it
  EXPECT_EQ(salient::io::read_image(out + "/sanity.png").rows, 3 * 360);  // Spearman |map|, signed, SSIM
}

TEST(Cli, EvaluateRejectsBadManifestsWithOneLine) {
  std::string dir = temp_dir("cli_evaluate_bad");
  salient::io::write_npy(dir + "/x.npy", reference()["input"].narrow(0, 0, 1));
  auto manifest = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  std::string run = "evaluate --model " + ref_model() + " --methods gradcam --data ";
  expect_bad_input(run + manifest("a.jsonl", "{\"index\": 0}\n"), dir + "/o1", "a.jsonl:1: needs \"image\" or \"input\"");
  expect_bad_input(run + manifest("b.jsonl", "{\"input\": \"x.npy\"}\nnot json\n"), dir + "/o2", "b.jsonl:2: not a JSON object");
  expect_bad_input(run + manifest("c.jsonl", "{\"input\": \"x.npy\"}\n") + " --metrics pointing", dir + "/o3",
                   "need a \"box\" or \"mask\"");
  expect_bad_input(run + manifest("d.jsonl", "{\"input\": \"x.npy\", \"box\": [0, 0, 64, 10]}\n") + " --metrics pointing",
                   dir + "/o4", "is not inside the 64x64 model input");
  expect_bad_input(run + manifest("e.jsonl", "{\"input\": \"x.npy\", \"index\": 3}\n"), dir + "/o5", "index 3 out of range");
  expect_bad_input(run + manifest("f.jsonl", "{\"input\": \"x.npy\"}\n") + " --metrics faithfulness", dir + "/o6",
                   "unknown metric 'faithfulness'");
  // Errors found once the image or the model's output is known still name the line.
  salient::io::write_png(dir + "/empty_mask.png", cv::Mat(64, 64, CV_8UC3, cv::Scalar(0, 0, 0)));
  expect_bad_input(run + manifest("g.jsonl", "{\"input\": \"x.npy\"}\n{\"input\": \"x.npy\", \"mask\": \"empty_mask.png\"}\n"),
                   dir + "/o7", "g.jsonl:2: mask '" + dir + "/empty_mask.png' has no object pixel");
  expect_bad_input(run + manifest("h.jsonl", "{\"input\": \"x.npy\", \"box\": [0, 0, 5, 5], \"mask\": \"m.png\"}\n"),
                   dir + "/o8", "h.jsonl:1: give \"box\" or \"mask\", not both");
  expect_bad_input(run + manifest("i.jsonl", "{\"input\": \"x.npy\"}\n{\"input\": \"x.npy\", \"target\": 1000}\n") +
                       " --metrics deletion",
                   dir + "/o9", "i.jsonl:2: target 1000 out of range");
  // A missing file is named with its line and role; a reversed box says which order is wanted.
  expect_bad_input(run + manifest("j.jsonl", "{\"input\": \"x.npy\"}\n{\"input\": \"x.npy\", \"mask\": \"gone.png\"}\n"),
                   dir + "/o10", "j.jsonl:2: mask '" + dir + "/gone.png' not found");
  expect_bad_input(run + manifest("k.jsonl", "{\"image\": \"gone.png\"}\n"), dir + "/o11",
                   "k.jsonl:1: image '" + dir + "/gone.png' not found");
  expect_bad_input(run + manifest("l.jsonl", "{\"input\": \"gone.npy\"}\n"), dir + "/o12",
                   "l.jsonl:1: tensor file '" + dir + "/gone.npy' not found");
  expect_bad_input(run + manifest("m.jsonl", "{\"input\": \"x.npy\", \"box\": [20, 0, 10, 5]}\n") + " --metrics pointing",
                   dir + "/o13", "m.jsonl:1: box [20, 0, 10, 5] must have x0 <= x1 and y0 <= y1");
  // A line naming two sources, or an option out of range, is refused before any image runs.
  expect_bad_input(run + manifest("n.jsonl", "{\"image\": \"a.png\", \"input\": \"x.npy\"}\n"), dir + "/o14",
                   "n.jsonl:1: give \"image\" or \"input\", not both");
  expect_bad_input(run + manifest("o.jsonl", "{\"input\": \"x.npy\", \"box\": [0, 0, 5, 5]}\n") +
                       " --metrics pointing --tolerance -3",
                   dir + "/o15", "--tolerance must be a distance in pixels >= 0, got -3");
  expect_bad_input(run + manifest("p.jsonl", "{\"input\": \"x.npy\"}\n") + " --metrics sanity --sanity-images 0",
                   dir + "/o16", "--sanity-images must be >= 1, got 0");
  // A non-finite row fails before any image runs, named; one only its own run can refuse
  // (too small for the model's pooling) fails there, and names its line too.
  salient::io::write_npy(dir + "/nan.npy", at::full({1, 3, 64, 64}, std::nan(""), at::kFloat));
  expect_bad_input(run + manifest("q.jsonl", "{\"input\": \"x.npy\"}\n{\"input\": \"nan.npy\"}\n"), dir + "/o17",
                   "q.jsonl:2: 'nan.npy[0]' has non-finite values (NaN or Inf)");
  salient::io::write_npy(dir + "/tiny.npy", at::zeros({1, 3, 2, 2}));
  CliRun r = salient_cli(run + manifest("r.jsonl", "{\"input\": \"x.npy\"}\n{\"input\": \"tiny.npy\"}\n") +
                         " --metrics deletion --out " + dir + "/o18");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.last_line().rfind("salient: error: " + dir + "/r.jsonl:2 ('tiny.npy[0]'): model ", 0), 0u) << r.out;
  // A file of several samples needs "index": sample 0 would be a guess.
  salient::io::write_npy(dir + "/two.npy", reference()["input"].narrow(0, 0, 2));
  expect_bad_input(run + manifest("s.jsonl", "{\"input\": \"two.npy\", \"index\": 1}\n{\"input\": \"two.npy\"}\n"),
                   dir + "/o19", "s.jsonl:2: '" + dir + "/two.npy' holds 2 samples: say which with \"index\"");
}

TEST(Cli, EvaluateMetricsAllRunsEveryMetricTheManifestAllows) {
  std::string dir = temp_dir("cli_evaluate_all_metrics");
  salient::io::write_npy(dir + "/x.npy", reference()["input"].narrow(0, 0, 2));
  std::ofstream(dir + "/boxes.jsonl") << "{\"input\": \"x.npy\", \"index\": 0, \"box\": [0, 0, 31, 31]}\n"
                                      << "{\"input\": \"x.npy\", \"index\": 1, \"box\": [8, 8, 40, 40]}\n";
  std::ofstream(dir + "/bare.jsonl") << "{\"input\": \"x.npy\", \"index\": 0, \"box\": [0, 0, 31, 31]}\n"
                                     << "{\"input\": \"x.npy\", \"index\": 1}\n";
  const std::string base = "evaluate --model " + ref_model() + " --methods integrated_gradients --data " + dir;
  const std::string run = "evaluate --model " + ref_model() + " --methods integrated_gradients --metrics all --data " + dir;
  auto metrics_of = [](const std::string& summary) {
    std::set<std::string> names;
    const nlohmann::json j = nlohmann::json::parse(std::ifstream(summary));
    for (const auto& kv : j.at("integrated_gradients").items()) names.insert(kv.key());
    return names;
  };
  CliRun r = salient_cli(run + "/boxes.jsonl --out " + dir + "/o1");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::set<std::string> every = {"deletion", "insertion", "road", "road_morf", "road_lerf", "pointing", "energy",
                                       "infidelity", "sensitivity", "completeness", "sanity_spearman",
                                       "sanity_spearman_abs", "sanity_ssim"};
  EXPECT_EQ(metrics_of(dir + "/o1/summary.json"), every);
  // A line without a box drops the localisation metrics, said once; by name they stay an error.
  r = salient_cli(run + "/bare.jsonl --out " + dir + "/o2");
  ASSERT_EQ(r.code, 0) << r.out;
  std::set<std::string> rest = every;
  rest.erase("pointing"), rest.erase("energy");
  EXPECT_EQ(metrics_of(dir + "/o2/summary.json"), rest);
  EXPECT_NE(r.out.find("pointing and energy skipped (" + dir + "/bare.jsonl:2 has no \"box\" or \"mask\")"),
            std::string::npos)
      << r.out;
  expect_bad_input(base + "/bare.jsonl --metrics all,pointing", dir + "/o3", "bare.jsonl:2: pointing/energy need");
}

TEST(Cli, EvaluateWarnsOnceAboutEachManifestFieldItDoesNotUse) {
  std::string dir = temp_dir("cli_evaluate_unknown_field");
  salient::io::write_npy(dir + "/x.npy", reference()["input"].narrow(0, 0, 1));
  std::ofstream(dir + "/m.jsonl") << "{\"input\": \"x.npy\", \"boxx\": [0, 0, 5, 5]}\n"
                                  << "{\"input\": \"x.npy\", \"boxx\": [0, 0, 5, 5], \"note\": \"mine\"}\n";
  CliRun r = salient_cli("evaluate --model " + ref_model() + " --methods gradcam --metrics deletion --data " + dir +
                         "/m.jsonl --out " + dir + "/out");
  ASSERT_EQ(r.code, 0) << r.out;
  size_t boxx = 0, note = 0;
  for (const auto& line : r.lines()) {
    boxx += line.find("salient: warning: " + dir + "/m.jsonl:1: field \"boxx\" is not used") == 0;
    note += line.find("salient: warning: " + dir + "/m.jsonl:2: field \"note\" is not used") == 0;
  }
  EXPECT_EQ(boxx, 1u) << r.out;
  EXPECT_EQ(note, 1u) << r.out;
  EXPECT_TRUE(fs::exists(dir + "/out/summary.json"));
}

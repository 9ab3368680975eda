#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdio>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "helpers.hpp"

namespace fs = std::filesystem;

namespace testing_salient {

namespace {
// LibTorch seeds its default generator from the OS, so unseeded draws (at::randn in a test)
// differ per run: every test starts from the same seed instead, alone or in the full binary.
class SeedEachTest : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override { at::manual_seed(20261129); }
};
const bool seed_each_test_registered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedEachTest);
  return true;
}();
}  // namespace

std::string data(const std::string& rel) { return std::string(SALIENT_TEST_DATA) + "/" + rel; }

std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("salient_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

const Reference& reference() {
  static Reference ref = [] {
    Reference r;
    auto ex = torch::jit::load(data("reference/expected.pt"));
    for (const auto& b : ex.named_buffers(/*recurse=*/false)) r.t[b.name] = b.value;
    std::ifstream f(data("reference/manifest.json"));
    auto m = nlohmann::json::parse(f);
    for (const auto& e : m["tensors"]) {
      if (e.contains("tolerance") && e["tolerance"].is_object())
        r.tol[e["name"]] = {e["tolerance"]["atol"].get<double>(), e["tolerance"]["rtol"].get<double>()};
    }
    return r;
  }();
  return ref;
}

::testing::AssertionResult close(const at::Tensor& a_in, const at::Tensor& b_in, double atol, double rtol) {
  at::Tensor a = a_in.detach().to(at::kDouble), b = b_in.detach().to(at::kDouble);
  if (a.sizes() != b.sizes()) {
    std::ostringstream os;
    os << "shape " << a.sizes() << " vs " << b.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  at::Tensor excess = (a - b).abs() - (atol + rtol * b.abs());
  if (excess.numel() == 0 || excess.max().item<double>() <= 0) return ::testing::AssertionSuccess();
  int64_t i = excess.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure()
         << "max |a-b| = " << (a - b).abs().max().item<double>() << "; worst element " << i << ": "
         << a.flatten()[i].item<double>() << " vs " << b.flatten()[i].item<double>() << " (atol " << atol
         << ", rtol " << rtol << ")";
}

::testing::AssertionResult matches_reference(const at::Tensor& ours, const std::string& name) {
  const auto& ref = reference();
  auto it = ref.tol.find(name);
  if (it == ref.tol.end()) return ::testing::AssertionFailure() << "no tolerance for " << name;
  auto r = close(ours, ref[name], it->second.first, it->second.second);
  if (!r) r << " [" << name << "]";
  // SALIENT_PARITY_REPORT=1 prints each comparison's worst gap, for release notes.
  if (std::getenv("SALIENT_PARITY_REPORT") && ours.sizes() == ref[name].sizes())
    std::cout << "parity " << name << " max|ours-ref| "
              << (ours.to(at::kDouble) - ref[name].to(at::kDouble)).abs().max().item<double>() << " atol "
              << it->second.first << "\n";
  return r;
}

std::string msg_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const salient::Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

torch::jit::Module linear_model(const at::Tensor& weight, const at::Tensor& bias) {
  torch::jit::Module m("LinearModel");
  m.register_parameter("weight", weight.clone(), false);
  m.register_parameter("bias", bias.clone(), false);
  m.define(R"(
def forward(self, x):
    return torch.matmul(torch.flatten(x, 1), self.weight.t()) + self.bias
)");
  return m;
}

torch::jit::Module one_conv_model(const at::Tensor& conv_w, const at::Tensor& conv_b, const at::Tensor& fc_w,
                                  bool squared) {
  // Named like torch.nn.Conv2d: FullGrad finds bias layers by class name.
  torch::jit::Module conv("Conv2d");
  conv.register_parameter("weight", conv_w.clone(), false);
  conv.register_parameter("bias", conv_b.clone(), false);
  conv.define(R"(
def forward(self, x):
    return torch.conv2d(x, self.weight, self.bias)
)");
  torch::jit::Module m("OneConv");
  m.register_module("conv", conv);
  m.register_parameter("fc_weight", fc_w.clone(), false);
  m.define(squared ? R"(
def forward(self, x):
    a = self.conv.forward(x)
    return torch.matmul(torch.mean(a * a, [2, 3]), self.fc_weight.t())
)"
                   : R"(
def forward(self, x):
    a = self.conv.forward(x)
    return torch.matmul(torch.mean(a, [2, 3]), self.fc_weight.t())
)");
  return m;
}

std::vector<std::string> CliRun::lines() const {
  std::vector<std::string> v;
  std::istringstream is(out);
  for (std::string l; std::getline(is, l);)
    if (!l.empty()) v.push_back(l);
  return v;
}

std::string CliRun::last_line() const {
  auto v = lines();
  return v.empty() ? std::string() : v.back();
}

CliRun salient_cli(const std::string& args) {
  CliRun r;
  FILE* p = popen((std::string(SALIENT_CLI) + " " + args + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace testing_salient

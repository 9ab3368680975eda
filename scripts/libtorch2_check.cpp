// Runs every method on a TorchScript model with the LibTorch this was built against
// (scripts/libtorch2_check.sh builds it against a PyTorch 2.x install): the graph taps
// must find their layers in that version's IR, and vanilla must equal raw autograd.
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>
#include <torch/version.h>

#include <iostream>

#include "salient/explain.hpp"
#include "salient/gradient.hpp"
#include "salient/metrics.hpp"
#include "salient/model.hpp"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string path = argv[i];
    salient::Model model = salient::Model::load(path);
    at::manual_seed(0);
    at::Tensor x = at::randn({2, 3, 64, 64});
    // vanilla against torch::autograd::grad on the module as loaded
    torch::jit::Module raw = torch::jit::load(path);
    raw.eval();
    at::Tensor xi = x.clone().requires_grad_(true);
    at::Tensor out = raw.forward({xi}).toTensor();
    at::Tensor g = torch::autograd::grad({out.select(1, 1).sum()}, {xi})[0];
    at::Tensor v = salient::vanilla_gradient(model, x, salient::Target::index(1)).map;
    const double gap = (v - g).abs().max().item<double>();
    std::cout << path << " LibTorch " << TORCH_VERSION << ": default CAM layer '" << model.default_cam_layer({3, 64, 64})
              << "', vanilla vs autograd max gap " << gap << "\n";
    if (!(gap < 1e-5)) ++failures;
    std::vector<std::string> names;
    for (const auto& m : salient::methods()) names.push_back(m.name);
    salient::ExplainSettings s;
    s.n_steps = 8;
    s.samples = 4;
    s.masks = 64;
    try {
      auto maps = salient::explain(model, x, names, salient::Target::index(1), s);
      for (const auto& kv : maps) {
        const bool ok = kv.second.map.defined() && kv.second.map.size(0) == 2 && kv.second.map.size(2) == 64 &&
                        at::isfinite(kv.second.map).all().item<bool>();
        std::cout << "  " << kv.first << " " << (ok ? "ok" : "BAD") << " " << kv.second.map.sizes() << "\n";
        failures += ok ? 0 : 1;
      }
      auto road = salient::road(model, x, maps.at("gradcam").map, salient::Target::index(1));
      std::cout << "  road combined " << road.combined << "\n";
      // The bf16 frozen copy (channels-last weights) must build and stay close to float32.
      at::Tensor f32 = model.infer(x), b16 = model.infer(x, salient::Precision::BFloat16);
      const double bgap = (b16 - f32).abs().max().item<double>() / f32.abs().max().item<double>();
      std::cout << "  bf16 infer: max gap / max |logit| " << bgap << "\n";
      if (!(bgap < 0.05)) ++failures;
    } catch (const std::exception& e) {
      std::cout << "  FAILED: " << e.what() << "\n";
      ++failures;
    }
  }
  std::cout << (failures ? "FAILURES: " + std::to_string(failures) : std::string("all ok")) << "\n";
  return failures ? 1 : 0;
}

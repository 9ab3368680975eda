// salient layers: module paths, kinds and output shapes, for choosing --layer.
#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>

#include "cli.hpp"

namespace salient {
namespace cli {

namespace {

struct LayersArgs {
  std::string model;
  std::string input_size;
  bool json = false;
};

std::string dims_str(const std::vector<int64_t>& d) {
  if (d.empty()) return "-";
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

int run_layers(const LayersArgs& a) {
  salient::Model model = salient::Model::load(a.model);
  std::vector<int64_t> shape;
  if (a.input_size.empty()) {
    int64_t c = model.input_channels();
    shape = {c > 0 ? c : 3, 224, 224};
    std::cerr << "no --input-size given; probing with " << dims_str(shape) << "\n";
  } else {
    shape = parse_dims(a.input_size, "--input-size", "3x224x224");
    SALIENT_CHECK(shape.size() == 3, "--input-size: expected CxHxW, got '", a.input_size, "'");
  }
  auto layers = model.layers(shape);
  std::string chosen;
  try {
    chosen = model.default_cam_layer(shape);
  } catch (const salient::Error&) {
  }
  if (a.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& l : layers)
      j.push_back({{"path", l.path}, {"kind", l.kind}, {"op", l.op}, {"shape", l.shape},
                   {"tappable", l.tappable()}, {"default_cam_layer", l.path == chosen}});
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  size_t w = 5;
  for (const auto& l : layers) w = std::max(w, l.path.size());
  std::cout << std::left << std::setw(static_cast<int>(w) + 2) << "layer" << std::setw(22) << "kind"
            << std::setw(26) << "op" << "output shape\n";
  for (const auto& l : layers) {
    std::cout << std::setw(static_cast<int>(w) + 2) << l.path << std::setw(22) << l.kind << std::setw(26)
              << (l.tappable() ? l.op : "(no output)") << dims_str(l.shape) << (l.path == chosen ? "  <- default CAM layer" : "")
              << "\n";
  }
  return 0;
}

}  // namespace

Runner add_layers(CLI::App& app) {
  auto a = std::make_shared<LayersArgs>();
  // Positional as documented, or -m/--model like every other subcommand.
  app.add_option("model,-m,--model", a->model, "TorchScript model file")->required();
  app.add_option("--input-size", a->input_size, "Probe input CxHxW, e.g. 3x224x224");
  app.add_flag("--json", a->json, "Print JSON instead of a table");
  return [a] { return run_layers(*a); };
}

}  // namespace cli
}  // namespace salient

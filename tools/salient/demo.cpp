// salient demo: the bundled Fashion-MNIST-in-clutter model explained on its sample
// images with every core method; panels in out/demo and how often each map's peak
// lands on the item.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "cli.hpp"

namespace fs = std::filesystem;

namespace salient {
namespace cli {

namespace {

struct DemoArgs {
  std::string data = std::string(SALIENT_SOURCE_DIR) + "/data/demo";
  std::string model = std::string(SALIENT_SOURCE_DIR) + "/models/demo/fashion96.pt";
  std::string device = "cpu";
  std::string out = "out/demo";
  std::string methods = "vanilla,smoothgrad,gradcam";
  MethodFlags flags;
};

struct Item {
  std::string image;
  int64_t target = 0;
  int box[4] = {0, 0, 0, 0};  // x0, y0, x1, y1 inclusive
};

std::vector<Item> read_manifest(const std::string& dir) {
  std::string path = (fs::path(dir) / "manifest.jsonl").string();
  std::ifstream f(path);
  SALIENT_CHECK(f.good(), "demo manifest '", path, "' not found (pass --data)");
  std::vector<Item> items;
  std::string line;
  while (std::getline(f, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
      Item it;
      it.image = (fs::path(dir) / j.at("image").get<std::string>()).string();
      it.target = j.at("target").get<int64_t>();
      auto b = j.at("box");
      for (int k = 0; k < 4; ++k) it.box[k] = b.at(k).get<int>();
      items.push_back(it);
    } catch (const nlohmann::json::exception& e) {
      SALIENT_FAIL("demo manifest '", path, "': bad line: ", e.what());
    }
  }
  SALIENT_CHECK(!items.empty(), "demo manifest '", path, "' lists no images");
  return items;
}

// Row, column of the maximum of a 2-D map.
std::pair<int, int> peak(const cv::Mat& m) {
  cv::Point p;
  cv::minMaxLoc(m, nullptr, nullptr, nullptr, &p);
  return {p.y, p.x};
}

bool inside(const Item& it, std::pair<int, int> rc) {
  return rc.second >= it.box[0] && rc.second <= it.box[2] && rc.first >= it.box[1] && rc.first <= it.box[3];
}

int run_demo(const DemoArgs& a) {
  auto items = read_manifest(a.data);
  std::vector<std::string> labels = salient::io::read_labels((fs::path(a.data) / "labels.txt").string());
  salient::Model model = load_model(a.model, a.device);
  ensure_writable_dir(a.out);

  salient::io::Preprocess pre = salient::io::Preprocess::preset("none");
  std::vector<at::Tensor> xs;
  std::vector<cv::Mat> images;
  std::vector<int64_t> targets;
  for (const auto& it : items) {
    auto p = salient::io::prepare(salient::io::read_image(it.image), pre, 3);
    xs.push_back(p.tensor);
    images.push_back(p.display);
    targets.push_back(it.target);
  }
  at::Tensor x = at::cat(xs);
  at::Tensor probs = salient::probabilities(model.predict(x));
  at::Tensor predicted = probs.argmax(1);
  // The demo explains the true class: the item's place is the right answer.
  salient::Target target = salient::Target::per_sample(targets);
  RenderSettings render;
  std::vector<std::string> methods = parse_methods(a.methods);
  salient::ExplainSettings settings = method_settings(a.flags);
  if (methods == std::vector<std::string>{"all"})
    methods = salient::suitable_methods(model, std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end()), settings.layer);
  auto results = salient::explain(model, x, methods, target, settings);
  std::cout << "model " << a.model << ", " << items.size() << " images, CAM layer '"
            << (settings.layer.empty() ? model.default_cam_layer(std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end())) : settings.layer) << "'\n";

  std::map<std::string, int> hits;
  int centre_hits = 0, correct = 0;
  std::vector<cv::Mat> panels;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    cv::Mat shown = images[i].clone();
    cv::rectangle(shown, cv::Point(it.box[0], it.box[1]), cv::Point(it.box[2], it.box[3]), cv::Scalar(0, 220, 0), 1);
    std::vector<salient::render::Cell> cells{{"input + item box", shown}};
    std::ostringstream line;
    int64_t pred = predicted[i].item<int64_t>();
    correct += pred == it.target;
    line << std::left << std::setw(24) << fs::path(it.image).filename().string() << std::setw(13)
         << label_of(labels, it.target) << "predicted " << std::setw(13) << label_of(labels, pred) << std::fixed
         << std::setprecision(2) << probs[i][pred].item<double>();
    for (const auto& m : methods) {
      at::Tensor map = results[m].map[i];
      bool cam = is_cam_method(m);
      cv::Mat unit = unit_map(map, cam, render);
      bool hit = inside(it, peak(unit));
      hits[m] += hit;
      line << "  " << m << (hit ? " hit " : " miss");
      cells.push_back({m, salient::render::overlay(images[i], salient::render::colorize(unit, render.colormap), render.alpha)});
    }
    centre_hits += inside(it, {images[i].rows / 2, images[i].cols / 2});
    std::string caption = "true: " + label_of(labels, it.target) + "   predicted: " + label_of(labels, pred) + " (" +
                          std::to_string(static_cast<int>(std::lround(100 * probs[i][pred].item<double>()))) + "%)";
    cv::Mat panel = salient::render::panel(cells, caption, 192, 9);
    std::string name = fs::path(it.image).stem().string() + ".panel.png";
    salient::io::write_png((fs::path(a.out) / name).string(), panel);
    panels.push_back(panel);
    std::cout << line.str() << "\n";
  }
  salient::io::write_png((fs::path(a.out) / "overview.png").string(), salient::render::stack_rows(panels));
  const double n = static_cast<double>(items.size());
  std::cout << "\naccuracy " << correct << "/" << items.size() << "\n";
  std::cout << "peak inside the item's box (explaining the true class):\n";
  for (const auto& m : methods)
    std::cout << "  " << std::left << std::setw(22) << m << hits[m] << "/" << items.size() << "  (" << std::fixed
              << std::setprecision(0) << 100.0 * hits[m] / n << "%)\n";
  std::cout << "  " << std::setw(22) << "centre" << centre_hits << "/" << items.size() << "  (" << 100.0 * centre_hits / n
            << "%)  baseline: the image centre as the peak\n";
  std::cout << "\npanels: " << fs::absolute(a.out).string() << "/*.panel.png, all in "
            << fs::absolute(a.out).string() << "/overview.png\n";
  return 0;
}

}  // namespace

Runner add_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  app.add_option("--data", a->data, "Demo data directory (manifest.jsonl, labels.txt, images/)")->capture_default_str();
  app.add_option("-m,--model", a->model, "Demo model")->capture_default_str();
  add_device_option(app, &a->device);
  app.add_option("--out,-o", a->out, "Output directory")->capture_default_str();
  app.add_option("--method,--methods", a->methods, "Comma-separated methods, or all")->capture_default_str();
  add_method_flags(app, &a->flags);
  return [a] { return run_demo(*a); };
}

}  // namespace cli
}  // namespace salient

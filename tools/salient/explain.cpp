// salient explain: maps for images or a preprocessed tensor, written as .npy, PNG and JSON.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>

#include "cli.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace salient {
namespace cli {

namespace {

struct ExplainArgs {
  std::string model;
  std::string device = "cpu";
  std::vector<std::string> images;
  std::string input;
  std::string methods = "vanilla,smoothgrad,gradcam";
  MethodFlags flags;
  std::string target = "predicted";
  std::string targets;
  PreprocessFlags preprocess;
  std::string labels;
  std::string out;
  std::string save = "png,npy,json";
  std::string colormap = "jet";
  std::string reduce = "max-abs";
  double percentile = 99.5;
  double alpha = 0.5;
};

// One input sample: where it came from, what the model sees and what we draw on.
struct Sample {
  std::string source;  // file
  std::string stem;    // output name prefix
  int64_t index = -1;  // row in a .npy batch
  at::Tensor x;        // [1, C, H, W]
  cv::Mat display;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int run_explain(const ExplainArgs& a) {
  auto t_start = std::chrono::steady_clock::now();
  // Everything the user can get wrong is checked before the first file is written.
  std::vector<std::string> methods = parse_methods(a.methods);
  const bool all = methods == std::vector<std::string>{"all"};
  std::set<std::string> save;
  for (const auto& s : split(a.save, ',')) {
    SALIENT_CHECK(s == "png" || s == "npy" || s == "json", "--save: unknown kind '", s, "'; use png,npy,json");
    save.insert(s);
  }
  SALIENT_CHECK(a.images.empty() != a.input.empty(), "give either --image FILE... or --input X.npy");
  SALIENT_CHECK(a.target == "predicted" || a.targets.empty(), "give --target or --targets, not both");

  salient::ExplainSettings settings = method_settings(a.flags);
  salient::check_settings(all ? std::vector<std::string>{"vanilla"} : methods, settings);
  RenderSettings render;
  render.colormap = salient::render::colormap_from_string(a.colormap);
  render.reduce = salient::render::reduce_from_string(a.reduce);
  render.percentile = a.percentile;
  render.alpha = a.alpha;
  SALIENT_CHECK(a.percentile > 0 && a.percentile <= 100, "--percentile must be in (0, 100]");
  SALIENT_CHECK(a.alpha >= 0 && a.alpha <= 1, "--alpha must be in [0, 1]");

  salient::io::Preprocess pre = preprocess_from_flags(a.preprocess);
  std::vector<std::string> labels;
  if (!a.labels.empty()) labels = salient::io::read_labels(a.labels);

  ensure_writable_dir(a.out);
  auto t0 = std::chrono::steady_clock::now();
  salient::Model model = load_model(a.model, a.device);
  double load_ms = ms_since(t0);

  // Inputs.
  std::vector<Sample> samples;
  if (!a.input.empty()) {
    at::Tensor x = salient::io::read_npy(a.input);
    if (x.dim() == 3) x = x.unsqueeze(0);
    SALIENT_CHECK(x.dim() == 4 && x.size(0) > 0, "--input '", a.input, "' has shape ",
                  x.sizes(), "; expected float32 [N, C, H, W]");
    SALIENT_CHECK(at::isFloatingType(x.scalar_type()), "--input '", a.input, "' must hold floats");
    SALIENT_CHECK(at::isfinite(x).all().item<bool>(), "--input '", a.input,
                  "' contains non-finite values (NaN or Inf)");
    std::string stem = fs::path(a.input).stem().string();
    bool user_norm = !a.preprocess.mean.empty() || !a.preprocess.std.empty();
    for (int64_t i = 0; i < x.size(0); ++i) {
      Sample s{a.input, stem, i, x.narrow(0, i, 1), {}};
      at::Tensor shown = x[i];
      if (!user_norm) shown = (shown - shown.min()) / (shown.max() - shown.min() + 1e-12);
      salient::io::Preprocess view;  // identity unless the user said how the tensor was normalised
      if (user_norm) view = pre;
      s.display = salient::io::tensor_to_image(shown, view);
      samples.push_back(std::move(s));
    }
  } else {
    int64_t channels = model.input_channels();
    if (channels != 1) channels = 3;
    std::set<std::string> stems;
    for (const auto& path : a.images) {
      cv::Mat rgb = salient::io::read_image(path);
      auto prepared = salient::io::prepare(rgb, pre, static_cast<int>(channels));
      std::string stem = fs::path(path).stem().string();
      SALIENT_CHECK(stems.insert(stem).second, "two inputs share the name '", stem,
                    "'; their outputs would overwrite each other");
      samples.push_back({path, stem, -1, prepared.tensor, prepared.display});
    }
  }
  const int64_t total = static_cast<int64_t>(samples.size());
  std::vector<int64_t> explicit_targets;
  if (!a.targets.empty()) {
    for (const auto& t : split(a.targets, ',')) explicit_targets.push_back(parse_int(t, "--targets"));
    SALIENT_CHECK(static_cast<int64_t>(explicit_targets.size()) == total, "--targets has ",
                  explicit_targets.size(), " values for ", total, " input(s)");
  } else if (a.target != "predicted") {
    explicit_targets.assign(total, parse_int(a.target, "--target"));
  }

  // Samples of equal shape run as one batch.
  std::map<std::vector<int64_t>, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < total; ++i) groups[samples[i].x.sizes().vec()].push_back(i);

  std::vector<at::Tensor> probs(total);
  std::vector<int64_t> predicted(total), targets(total);
  std::map<std::string, std::vector<at::Tensor>> maps;  // method -> per sample [1, ...]
  std::map<std::string, std::vector<double>> times;     // method -> per sample ms
  std::map<std::string, std::string> layer_used;
  std::map<std::string, std::vector<std::optional<double>>> deltas;  // integrated_gradients
  std::vector<std::string> shared;
  json passes = json::object();
  std::vector<double> forward_ms(total);
  for (const auto& g : groups) {
    std::vector<at::Tensor> xs;
    for (auto i : g.second) xs.push_back(samples[i].x);
    at::Tensor x = at::cat(xs);
    auto tf = std::chrono::steady_clock::now();
    at::Tensor out = model.predict(x);
    double f_ms = ms_since(tf) / static_cast<double>(g.second.size());
    at::Tensor p = salient::probabilities(out);
    std::vector<int64_t> group_targets;
    for (size_t j = 0; j < g.second.size(); ++j) {
      int64_t i = g.second[j];
      forward_ms[i] = f_ms;
      probs[i] = p[j];
      predicted[i] = out[j].argmax().item<int64_t>();
      targets[i] = explicit_targets.empty() ? predicted[i] : explicit_targets[i];
      group_targets.push_back(targets[i]);
    }
    // Range-checked here, once, before any method runs.
    salient::Target target = salient::Target::per_sample(group_targets);
    target.resolve(out);
    const std::vector<int64_t> shape(g.first.begin() + 1, g.first.end());
    if (all) {
      methods = salient::suitable_methods(model, shape, settings.layer);
      salient::check_settings(methods, settings);
    }
    bool cam = false;
    for (const auto& m : methods) cam = cam || salient::method_info(m).layer;
    if (cam && settings.layer.empty() && layer_used.empty())
      std::cerr << default_cam_layer_note(model, shape) << "\n";
    salient::ExplainStats stats;
    auto results = salient::explain(model, x, methods, target, settings, &stats);
    for (const auto& m : methods) {
      const salient::Attribution& attribution = results.at(m);
      layer_used[m] = attribution.layer;
      const double m_ms = stats.milliseconds[m] / static_cast<double>(g.second.size());
      maps[m].resize(total);
      times[m].resize(total);
      deltas[m].resize(total);
      for (size_t j = 0; j < g.second.size(); ++j) {
        int64_t i = g.second[j];
        maps[m][i] = attribution.map.narrow(0, static_cast<int64_t>(j), 1);
        times[m][i] = m_ms;
        if (attribution.delta.defined()) deltas[m][i] = attribution.delta[j].item<double>();
      }
    }
    shared = stats.shared;
    passes["forward_samples"] = passes.value("forward_samples", int64_t(0)) + stats.forward_samples;
    passes["backward_samples"] = passes.value("backward_samples", int64_t(0)) + stats.backward_samples;
  }

  // Outputs: all computed; now write.
  json summary;
  summary["model"] = a.model;
  summary["preprocess"] = a.input.empty() ? pre.describe() : "none (tensor input)";
  summary["methods"] = json::object();
  for (const auto& m : methods)
    summary["methods"][m] = method_params(m, settings, layer_used[m], settings.layer.empty());
  // Gradient methods asked for together share one forward and at most two backward passes.
  summary["shared_pass"] = shared;
  summary["passes"] = passes;
  summary["images"] = json::array();
  auto path_in_out = [&](const std::string& name) { return (fs::path(a.out) / name).string(); };

  // .npy: one file per (input file, method); rows in input order.
  if (save.count("npy")) {
    std::map<std::string, std::vector<int64_t>> by_stem;
    for (int64_t i = 0; i < total; ++i) by_stem[samples[i].stem].push_back(i);
    for (const auto& kv : by_stem)
      for (const auto& m : methods) {
        std::vector<at::Tensor> rows;
        for (auto i : kv.second) rows.push_back(maps[m][i]);
        salient::io::write_npy(path_in_out(kv.first + "." + m + ".npy"), at::cat(rows));
      }
  }
  for (int64_t i = 0; i < total; ++i) {
    const Sample& s = samples[i];
    std::string name = s.index >= 0 && total > 1 ? s.stem + "_" + std::to_string(s.index) : s.stem;
    json img;
    img["input"] = s.source;
    if (s.index >= 0) img["index"] = s.index;
    img["stem"] = s.stem;
    img["predicted"] = predicted[i];
    img["probability"] = probs[i][predicted[i]].item<double>();
    img["target"] = targets[i];
    img["target_probability"] = probs[i][targets[i]].item<double>();
    if (!labels.empty()) {
      img["predicted_label"] = label_of(labels, predicted[i]);
      img["target_label"] = label_of(labels, targets[i]);
    }
    img["timings_ms"] = {{"forward", forward_ms[i]}};
    img["methods"] = json::object();
    std::vector<salient::render::Cell> cells{{"input", s.display}};
    for (const auto& m : methods) {
      json mj = method_params(m, settings, layer_used[m], settings.layer.empty());
      mj["shape"] = maps[m][i].sizes().vec();
      if (save.count("npy")) mj["npy"] = s.stem + "." + m + ".npy";
      img["timings_ms"][m] = times[m][i];
      // Completeness: sum(attr) - (F(x) - F(x')) for the explained class.
      if (deltas[m][i]) mj["delta"] = *deltas[m][i];
      cv::Mat view = overlay_map(s.display, maps[m][i][0], is_cam_method(m), render);
      if (save.count("png")) {
        mj["png"] = name + "." + m + ".png";
        salient::io::write_png(path_in_out(name + "." + m + ".png"), view);
      }
      cells.push_back({m, view});
      img["methods"][m] = mj;
    }
    if (save.count("png")) {
      const std::string caption =
          panel_caption(labels, predicted[i], probs[i][predicted[i]].item<double>(), targets[i]);
      int cell = std::max(224, std::min(448, s.display.cols));
      salient::io::write_png(path_in_out(name + ".panel.png"), salient::render::panel(cells, caption, cell, 8));
      img["panel"] = name + ".panel.png";
    }
    summary["images"].push_back(img);
  }
  summary["timings_ms"] = {{"load_model", load_ms}, {"total", ms_since(t_start)}};
  if (save.count("json")) salient::io::write_file_atomic(path_in_out("summary.json"), summary.dump(2) + "\n");

  for (int64_t i = 0; i < total; ++i)
    std::cout << samples[i].stem << (samples[i].index >= 0 ? "[" + std::to_string(samples[i].index) + "]" : "")
              << ": predicted " << label_of(labels, predicted[i]) << " (" << probs[i][predicted[i]].item<double>()
              << "), explained " << label_of(labels, targets[i]) << "\n";
  std::cout << "wrote " << a.out << "\n";
  return 0;
}

}  // namespace

Runner add_explain(CLI::App& app) {
  auto a = std::make_shared<ExplainArgs>();
  app.add_option("--model,-m", a->model, "TorchScript model file (torch.jit.trace/script output)")->required();
  add_device_option(app, &a->device);
  app.add_option("--image,-i", a->images, "PNG or JPEG image(s)");
  app.add_option("--input", a->input, ".npy float32 [N,C,H,W], already preprocessed");
  std::string names;
  for (const auto& m : salient::methods()) names += (names.empty() ? "" : ", ") + m.name;
  app.add_option("--method,--methods", a->methods, "Comma-separated methods, or all: " + names)->capture_default_str();
  app.add_option("--target", a->target, "Class index for every input, or 'predicted'")->capture_default_str();
  app.add_option("--targets", a->targets, "Comma-separated class index per input");
  add_preprocess_flags(app, &a->preprocess);
  app.add_option("--labels", a->labels, "Class names, one per line");
  app.add_option("--out,-o", a->out, "Output directory")->required();
  app.add_option("--save", a->save, "What to write: png,npy,json")->capture_default_str();
  add_method_flags(app, &a->flags);
  app.add_option("--colormap", a->colormap, "jet, viridis, inferno or turbo")->capture_default_str();
  app.add_option("--reduce", a->reduce, "Channel reduction for gradient maps: max-abs, abs-sum or sum")->capture_default_str();
  app.add_option("--percentile", a->percentile, "Clip gradient maps at this percentile")->capture_default_str();
  app.add_option("--alpha", a->alpha, "Heatmap opacity in overlays")->capture_default_str();
  app.footer(
      "Writes DIR/<stem>.<method>.npy (raw map: [N,C,H,W] for gradient methods, [N,1,H,W] for CAM methods),\n"
      "DIR/<stem>.<method>.png overlays, DIR/<stem>.panel.png and DIR/summary.json.\n"
      "Exit code 0 on success, 2 on bad usage or bad input.");
  return [a] { return run_explain(*a); };
}

}  // namespace cli
}  // namespace salient

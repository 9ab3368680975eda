#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <unistd.h>

#include "cli.hpp"

namespace fs = std::filesystem;

namespace salient {
namespace cli {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

namespace {

// Parses all of `s` with `parse` (std::stoll, std::stod): false if any of it is left.
template <typename T, typename F>
bool parse_all(const std::string& s, F parse, T* out) {
  size_t used = 0;
  try {
    *out = parse(s, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used > 0 && used == s.size();
}

long long to_ll(const std::string& s, size_t* used) { return std::stoll(s, used); }
double to_d(const std::string& s, size_t* used) { return std::stod(s, used); }

}  // namespace

int64_t parse_int(const std::string& s, const char* flag) {
  long long v = 0;
  SALIENT_CHECK(parse_all(s, to_ll, &v), flag, ": '", s, "' is not an integer");
  return v;
}

std::vector<int64_t> parse_dims(const std::string& s, const char* flag, const char* example) {
  std::vector<int64_t> dims;
  for (const auto& part : split(s, 'x')) {
    long long v = 0;
    SALIENT_CHECK(parse_all(part, to_ll, &v) && v > 0, flag, ": '", s, "' is not a list of sizes like ", example);
    dims.push_back(v);
  }
  SALIENT_CHECK(!dims.empty(), flag, ": '", s, "' is not a list of sizes like ", example);
  return dims;
}

std::vector<float> parse_floats(const std::string& s, const char* flag) {
  std::vector<float> out;
  for (const auto& part : split(s, ',')) {
    double v = 0;
    SALIENT_CHECK(parse_all(part, to_d, &v), flag, ": '", part, "' is not a number");
    out.push_back(static_cast<float>(v));
  }
  SALIENT_CHECK(!out.empty(), flag, ": no values");
  return out;
}

int64_t parse_bytes(const std::string& s, const char* flag) {
  size_t digits = s.find_first_not_of("0123456789.eE+-");
  std::string number = s.substr(0, digits), unit = digits == std::string::npos ? "" : s.substr(digits);
  double v = 0;
  SALIENT_CHECK(parse_all(number, to_d, &v) && v > 0, flag, ": '", s, "' is not a size like 512M or 2G");
  double mult = 1;
  if (unit == "K" || unit == "KiB" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else SALIENT_CHECK(unit.empty() || unit == "B", flag, ": unknown unit '", unit, "' (use K, M or G)");
  return static_cast<int64_t>(v * mult);
}

void add_preprocess_flags(CLI::App& app, PreprocessFlags* f) {
  app.add_option("--preset", f->preset, "Preprocessing: imagenet or none")->capture_default_str();
  app.add_option("--size", f->size, "Resize images to HxW (replaces the preset's resize and crop)");
  app.add_option("--mean", f->mean, "Per-channel mean, comma-separated");
  app.add_option("--std", f->std, "Per-channel std, comma-separated");
}

salient::io::Preprocess preprocess_from_flags(const PreprocessFlags& f) {
  salient::io::Preprocess pre = salient::io::Preprocess::preset(f.preset);
  if (!f.size.empty()) {
    auto hw = parse_dims(f.size, "--size", "224x224");
    SALIENT_CHECK(hw.size() == 2, "--size: expected HxW like 224x224, got '", f.size, "'");
    pre.size_h = static_cast<int>(hw[0]), pre.size_w = static_cast<int>(hw[1]);
    pre.resize_shorter = pre.crop_h = pre.crop_w = 0;
  }
  if (!f.mean.empty()) pre.mean = parse_floats(f.mean, "--mean");
  if (!f.std.empty()) pre.std = parse_floats(f.std, "--std");
  return pre;
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SALIENT_CHECK(!ec && fs::is_directory(dir), "output directory '", dir, "' cannot be created",
                ec ? ": " + ec.message() : std::string());
  std::string probe = (fs::path(dir) / (".salient_write_test." + std::to_string(::getpid()))).string();
  {
    std::ofstream f(probe);
    SALIENT_CHECK(f.good() && (f << "x") && f.flush(), "output directory '", dir, "' is not writable");
  }
  fs::remove(probe, ec);
}

std::vector<std::string> parse_methods(const std::string& spec) {
  std::vector<std::string> out;
  for (const auto& m : split(spec, ',')) {
    if (m != "all") {
      try {
        salient::method_info(m);
      } catch (const salient::Error& e) {
        SALIENT_FAIL("--method: ", e.what());
      }
    }
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  }
  SALIENT_CHECK(!out.empty(), "--method: no method given");
  SALIENT_CHECK(out.size() == 1 || std::find(out.begin(), out.end(), "all") == out.end(),
                "--method: 'all' cannot be combined with other names");
  return out;
}

bool is_cam_method(const std::string& name) { return !salient::method_info(name).channels; }

std::string default_cam_layer_note(const salient::Model& model, const std::vector<int64_t>& shape) {
  std::string note = "CAM methods: using layer '" + model.default_cam_layer(shape) +
                     "' (last module with a spatial 4-D output); pass --layer to choose another";
  std::vector<std::string> hidden;
  for (const auto& l : model.layers(shape))
    if (!l.tappable() && l.kind != "ModuleList" && l.kind != "ModuleDict") hidden.push_back(l.path);
  if (!hidden.empty()) {
    note += "; " + std::to_string(hidden.size()) + " module(s) have no output to use (inside control flow, or not " +
            "called): " + hidden[0] + (hidden.size() > 1 ? ", ..." : "") + " (salient layers lists them)";
  }
  return note;
}

void add_method_flags(CLI::App& app, MethodFlags* f) {
  auto& g = f->given;
  g["layer"] = app.add_option("--layer", f->layer, "Module path for CAM methods (default: automatic; see 'salient layers')");
  g["score"] = app.add_option("--score", f->score,
                              "What is explained: logit or probability (default: logit; probability for rise, reciprocam)");
  g["n_steps"] = app.add_option("--n-steps", f->n_steps, "integrated_gradients: integration points (default 50)");
  g["integration"] = app.add_option("--integration", f->integration,
                                    "integrated_gradients: riemann_left, riemann_right, riemann_middle, "
                                    "riemann_trapezoid, riemann_trapezoid_captum or gausslegendre (default)");
  g["baseline"] = app.add_option("--baseline", f->baseline,
                                 "integrated_gradients: zero (default), blur, noise, a number or FILE.npy; "
                                 "occlusion: zero or a number");
  g["samples"] = app.add_option("--samples,--n-samples", f->samples, "Noise tunnel: noisy copies (default 20)");
  g["noise_level"] = app.add_option("--noise-level", f->noise_level,
                                    "Noise tunnel: noise std / (max - min) of each input (default 0.15)");
  g["base"] = app.add_option("--base", f->base,
                             "Noise tunnel's base method: vanilla (default), input_x_gradient, integrated_gradients, "
                             "guided_backprop, deconvnet or occlusion");
  g["window"] = app.add_option("--window", f->window, "occlusion: square window in pixels, all channels (default 8)");
  g["stride"] = app.add_option("--stride", f->stride, "occlusion: stride in pixels (default 4)");
  g["masks"] = app.add_option("--masks", f->masks, "rise: number of random masks (default 2000)");
  g["cell"] = app.add_option("--cell", f->cell, "rise: mask cell size in pixels (default: a 7x7 grid)");
  g["keep"] = app.add_option("--keep", f->keep, "rise: probability of keeping a cell (default 0.5)");
  g["top_k"] = app.add_option("--top-k", f->top_k,
                              "faster_scorecam: channels kept, a fraction below 1 or a count (default 0.1)");
  g["gaussian"] = app.add_flag("--gaussian", f->gaussian, "reciprocam: 3x3 Gaussian masks instead of one-hot");
  g["seed"] = app.add_option("--seed", f->seed, "Random seed: rise, noise tunnel, noise baseline (default 0)");
  g["memory_budget"] = app.add_option("--memory-budget", f->memory_budget, "Memory for sample batches, e.g. 512M, 2G")
                           ->capture_default_str();
  g["precision"] = app.add_option("--precision", f->precision,
                                  "Forward-only methods and metrics (occlusion, rise, scorecam, faster_scorecam, "
                                  "deletion, insertion, road, infidelity): float32 or bf16, faster on CPUs with "
                                  "native bf16 (AVX512-BF16, AMX), slower on others; scores differ in about the "
                                  "third digit")
                       ->capture_default_str();
}

salient::ExplainSettings method_settings(const MethodFlags& f) {
  auto given = [&](const char* name) { return f.given.at(name)->count() > 0; };
  salient::ExplainSettings s;
  s.layer = f.layer;
  if (given("score")) s.score = salient::score_from_string(f.score);
  if (given("n_steps")) s.n_steps = f.n_steps;
  if (given("integration")) s.integration = salient::integration_from_string(f.integration);
  if (given("baseline")) {
    const std::string& b = f.baseline;
    if (b.size() > 4 && b.substr(b.size() - 4) == ".npy") {
      at::Tensor t = salient::io::read_npy(b);
      SALIENT_CHECK(at::isFloatingType(t.scalar_type()), "--baseline '", b, "' must hold floats");
      s.baseline_tensor = t.to(at::kFloat);
    } else {
      s.baseline = b;
    }
  }
  if (given("samples")) s.samples = f.samples;
  if (given("noise_level")) s.noise_level = f.noise_level;
  if (given("base")) s.base = f.base;
  if (given("window")) s.window = f.window;
  if (given("stride")) s.stride = f.stride;
  if (given("masks")) s.masks = f.masks;
  if (given("cell")) s.cell = f.cell;
  if (given("keep")) s.keep = f.keep;
  if (given("top_k")) s.top_k = f.top_k;
  if (given("gaussian")) s.gaussian = f.gaussian;
  if (given("seed")) s.seed = f.seed;
  s.memory_budget = parse_bytes(f.memory_budget, "--memory-budget");
  if (given("precision")) s.precision = salient::parse_precision(f.precision);
  if (s.precision == salient::Precision::BFloat16 && !salient::native_bf16())
    std::cerr << "salient: warning: --precision bf16: this CPU has no native bf16 (AVX512-BF16, AMX); it is "
                 "emulated and runs slower than float32\n";
  return s;
}

nlohmann::json method_params(const std::string& m, const salient::ExplainSettings& s, const std::string& layer,
                             bool layer_auto) {
  const bool prob_default = m == "rise" || m == "reciprocam";
  nlohmann::json p = {{"score", to_string(s.score ? *s.score : prob_default ? salient::Score::Probability
                                                                           : salient::Score::Logit)}};
  const salient::MethodInfo& info = salient::method_info(m);
  if (info.layer) {
    p["layer"] = layer;
    p["layer_auto"] = layer_auto;
  }
  auto ig = [&](nlohmann::json& j) {
    salient::IntegratedGradientsOptions d;
    j["n_steps"] = s.n_steps.value_or(d.n_steps());
    j["integration"] = salient::to_string(s.integration.value_or(d.integration()));
    j["baseline"] = s.baseline_tensor.defined() ? "file" : s.baseline.empty() ? "zero" : s.baseline;
  };
  if (m == "integrated_gradients") ig(p);
  if (info.family == "noise tunnel") {
    salient::SmoothGradOptions d;
    p["samples"] = s.samples.value_or(d.n_samples());
    p["noise_level"] = s.noise_level.value_or(d.noise_level());
    p["seed"] = s.seed.value_or(d.seed());
    p["base"] = s.base.empty() ? "vanilla" : s.base;
    if (s.base == "integrated_gradients") ig(p);
  }
  if (m == "occlusion" || (info.family == "noise tunnel" && s.base == "occlusion")) {
    salient::OcclusionOptions d;
    p["window"] = s.window.value_or(d.window());
    p["stride"] = s.stride.value_or(d.stride());
    p["baseline"] = s.baseline.empty() ? "zero" : s.baseline;
  }
  if (m == "rise") {
    salient::RiseOptions d;
    p["masks"] = s.masks.value_or(d.n_masks());
    p["cell"] = s.cell.value_or(d.cell());
    p["keep"] = s.keep.value_or(d.keep());
    p["seed"] = s.seed.value_or(d.seed());
  }
  if (m == "faster_scorecam") p["top_k"] = s.top_k.value_or(salient::FasterScoreCamOptions().top_k());
  if (m == "reciprocam") p["gaussian"] = s.gaussian.value_or(false);
  if (s.memory_budget) p["memory_budget"] = *s.memory_budget;
  const bool forward_only = m == "occlusion" || m == "rise" || m == "scorecam" || m == "faster_scorecam" ||
                            (info.family == "noise tunnel" && s.base == "occlusion");
  if (forward_only) p["precision"] = salient::precision_name(s.precision.value_or(salient::Precision::Float32));
  return p;
}

cv::Mat unit_map(const at::Tensor& sample_map, bool cam, const RenderSettings& r) {
  using namespace salient::render;
  // CAM maps are non-negative and smooth: min-max. Gradients are heavy-tailed: clip at a
  // high percentile of their magnitude so a few pixels do not wash out the rest.
  if (cam) return normalize(reduce(sample_map, Reduce::Sum), Normalize::MinMax);
  return normalize(reduce(sample_map, r.reduce), Normalize::Percentile, r.percentile);
}

cv::Mat overlay_map(const cv::Mat& image, const at::Tensor& sample_map, bool cam, const RenderSettings& r) {
  cv::Mat heat = salient::render::colorize(unit_map(sample_map, cam, r), r.colormap);
  return salient::render::overlay(image, heat, r.alpha);
}

std::string label_of(const std::vector<std::string>& labels, int64_t k) {
  if (k >= 0 && k < static_cast<int64_t>(labels.size())) return labels[k];
  return "class " + std::to_string(k);
}

std::vector<ManifestEntry> read_manifest(const std::string& path) {
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return std::filesystem::path(p).is_absolute() ? p : (base / p).string();
  };
  std::vector<ManifestEntry> out;
  static const std::set<std::string> known = {"image", "input", "index", "target", "box", "mask"};
  std::set<std::string> warned;
  for_each_json_line<nlohmann::json>(path, [&](const nlohmann::json& j, const std::string& where) {
    ManifestEntry e;
    e.where = where;
    // Other fields may be the user's own notes; a misspelt "box" or "target" would
    // otherwise go unnoticed, so each unknown name is said once.
    if (j.is_object())
      for (const auto& item : j.items())
        if (!known.count(item.key()) && warned.insert(item.key()).second)
          std::cerr << "salient: warning: " << where << ": field \"" << item.key()
                    << "\" is not used (known: image, input, index, target, box, mask)\n";
    SALIENT_CHECK(!(j.contains("image") && j.contains("input")), where, ": give \"image\" or \"input\", not both");
    if (j.contains("image")) {
      SALIENT_CHECK(j["image"].is_string(), where, ": \"image\" must be a file name");
      e.key = j["image"].get<std::string>();
      e.source = resolve(e.key);
    } else if (j.contains("input")) {
      SALIENT_CHECK(j["input"].is_string(), where, ": \"input\" must be a .npy file name");
      SALIENT_CHECK(!j.contains("index") || j["index"].is_number_integer(), where, ": \"index\" must be an integer");
      e.index = j.value("index", int64_t(0));
      e.index_given = j.contains("index");
      SALIENT_CHECK(e.index >= 0, where, ": \"index\" must be >= 0");
      e.key = j["input"].get<std::string>() + "[" + std::to_string(e.index) + "]";
      e.source = resolve(j["input"].get<std::string>());
    } else {
      SALIENT_FAIL(where, ": needs \"image\" or \"input\"");
    }
    if (j.contains("target")) {
      SALIENT_CHECK(j["target"].is_number_integer() && j["target"].get<int64_t>() >= 0, where,
                    ": \"target\" must be a class index");
      e.target = j["target"].get<int64_t>();
    }
    if (j.contains("box")) {
      SALIENT_CHECK(j["box"].is_array() && j["box"].size() == 4, where, ": \"box\" must be [x0, y0, x1, y1]");
      for (int k = 0; k < 4; ++k) {
        SALIENT_CHECK(j["box"][k].is_number_integer(), where, ": \"box\" must hold 4 integers");
        e.box[k] = j["box"][k].get<int64_t>();
      }
      e.has_box = true;
    }
    if (j.contains("mask")) {
      SALIENT_CHECK(!e.has_box, where, ": give \"box\" or \"mask\", not both");
      SALIENT_CHECK(j["mask"].is_string(), where, ": \"mask\" must be a file name");
      e.mask = resolve(j["mask"].get<std::string>());
    }
    out.push_back(std::move(e));
  });
  SALIENT_CHECK(!out.empty(), "--data '", path, "' lists no images");
  return out;
}

std::string panel_caption(const std::vector<std::string>& labels, int64_t predicted, double probability,
                          int64_t target) {
  return "predicted: " + label_of(labels, predicted) + " (" +
         std::to_string(static_cast<int>(std::lround(100 * probability))) + "%)   target: " + label_of(labels, target);
}

void add_device_option(CLI::App& app, std::string* device) {
  app.add_option("--device", *device, "Where the model runs: cpu, cuda or cuda:N (a LibTorch built with CUDA)")
      ->capture_default_str();
}

Model load_model(const std::string& path, const std::string& device) {
  std::optional<c10::Device> d;
  try {
    d = c10::Device(device);
  } catch (const std::exception&) {
  }
  SALIENT_CHECK(d.has_value() && (d->is_cpu() || d->is_cuda()), "--device '", device,
                "': expected cpu, cuda or cuda:N");
  return Model::load(path, *d);
}

}  // namespace cli
}  // namespace salient

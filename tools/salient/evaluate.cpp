// salient evaluate: faithfulness, localisation and sanity metrics of methods over a
// manifest of images, written as JSON, Markdown, CSV and plots.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "cli.hpp"
#include "salient/metrics.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace salient {
namespace cli {

namespace {

struct EvaluateArgs {
  std::string model, data, out;
  std::string device = "cpu";
  std::string methods = "gradcam,vanilla";
  std::string metrics = "deletion,insertion,pointing";
  MethodFlags flags;
  PreprocessFlags preprocess;
  double step = 0.01;
  std::string substrate = "zero";
  std::string reduce = "max-abs";
  double tolerance = -1;
  int64_t sanity_images = 8;
};

const std::vector<std::string> kMetrics = {"deletion",    "insertion",   "road",        "pointing",   "energy",
                                           "infidelity",  "sensitivity", "completeness", "sanity"};

// One manifest entry, checked. Its input is read again at its turn rather than held: a
// manifest of 5000 ImageNet-sized images would otherwise hold 3 GB of inputs all run.
struct Entry {
  std::string name;   // for per_image.jsonl
  std::string where;  // "manifest:line", for errors found later
  std::function<at::Tensor()> load;  // the model input, [1,C,H,W]
  std::vector<int64_t> shape;        // its [C,H,W]
  int64_t target = -1;
  bool has_box = false, has_mask = false;
  Box box{};
  at::Tensor mask;    // [H,W]
};

// The manifest's entries, each read and checked against the model input it gives.
std::vector<Entry> load_manifest(const std::string& path, const io::Preprocess& pre, int channels) {
  std::vector<Entry> out;
  // A .npy is read once and kept (its loaders hold views of it): the file is the user's
  // choice of what to hold.
  std::map<std::string, at::Tensor> npy_cache;
  for (const ManifestEntry& m : read_manifest(path)) {
    const std::string& where = m.where;
    // A missing file is named with its manifest line and its role (the readers only know
    // a path).
    for (const auto& [file, role] : {std::pair<std::string, const char*>{m.source, m.index < 0 ? "image" : "tensor file"},
                                     {m.mask, "mask"}})
      SALIENT_CHECK(file.empty() || fs::exists(file), where, ": ", role, " '", file, "' not found");
    Entry e;
    e.name = m.key;
    e.where = where;
    e.target = m.target;
    if (m.index < 0) {
      e.load = [source = m.source, pre, channels] { return io::prepare(io::read_image(source), pre, channels).tensor; };
    } else {
      if (!npy_cache.count(m.source)) npy_cache[m.source] = io::read_npy(m.source);
      at::Tensor t = npy_cache[m.source];
      if (t.dim() == 3) t = t.unsqueeze(0);
      SALIENT_CHECK(t.dim() == 4 && at::isFloatingType(t.scalar_type()), where, ": '", m.source,
                    "' must hold float32 [N,C,H,W]");
      SALIENT_CHECK(m.index_given || t.size(0) == 1, where, ": '", m.source, "' holds ", t.size(0),
                    " samples: say which with \"index\"");
      SALIENT_CHECK(m.index < t.size(0), where, ": index ", m.index, " out of range for '", m.source, "' (",
                    t.size(0), " rows)");
      e.load = [rows = t, index = m.index] { return rows.narrow(0, index, 1).to(at::kFloat); };
    }
    // Found here, a bad row fails the run at once with its line, not at its turn.
    const at::Tensor x = e.load();
    SALIENT_CHECK(at::isfinite(x).all().item<bool>(), where, ": '", m.key, "' has non-finite values (NaN or Inf)");
    e.shape = x.sizes().slice(1).vec();
    const int64_t h = x.size(2), w = x.size(3);
    if (m.has_box) {
      e.box = m.box;
      SALIENT_CHECK(e.box[0] <= e.box[2] && e.box[1] <= e.box[3], where, ": box [", e.box[0], ", ", e.box[1], ", ",
                    e.box[2], ", ", e.box[3], "] must have x0 <= x1 and y0 <= y1");
      SALIENT_CHECK(e.box[0] >= 0 && e.box[1] >= 0 && e.box[2] < w && e.box[3] < h,
                    where, ": box [", e.box[0], ", ", e.box[1], ", ", e.box[2], ", ", e.box[3],
                    "] is not inside the ", h, "x", w, " model input");
      e.has_box = true;
    }
    if (!m.mask.empty()) {
      cv::Mat mk = io::read_image(m.mask);
      SALIENT_CHECK(mk.rows == h && mk.cols == w, where, ": mask is ", mk.rows, "x", mk.cols, ", the model input ", h,
                    "x", w);
      cv::Mat gray;
      cv::extractChannel(mk, gray, 0);
      e.mask = at::from_blob(gray.data, {h, w}, at::kByte).clone();
      SALIENT_CHECK(e.mask.ne(0).any().item<bool>(), where, ": mask '", m.mask, "' has no object pixel (all zero)");
      e.has_mask = true;
    }
    out.push_back(std::move(e));
  }
  return out;
}

struct Stat {
  std::vector<double> v;
  json summary() const {
    double mean = 0, var = 0;
    for (double x : v) mean += x;
    if (!v.empty()) mean /= static_cast<double>(v.size());
    for (double x : v) var += (x - mean) * (x - mean);
    const double sd = v.size() > 1 ? std::sqrt(var / static_cast<double>(v.size() - 1)) : 0.0;
    return {{"mean", mean}, {"std", sd}, {"n", v.size()}};
  }
};

int run_evaluate(const EvaluateArgs& a) {
  auto t_start = std::chrono::steady_clock::now();
  std::vector<std::string> methods = parse_methods(a.methods);
  std::set<std::string> metrics;
  bool all_metrics = false;
  for (const auto& m : split(a.metrics, ',')) {
    if (m == "all") {
      all_metrics = true;
      metrics.insert(kMetrics.begin(), kMetrics.end());
      continue;
    }
    SALIENT_CHECK(std::find(kMetrics.begin(), kMetrics.end(), m) != kMetrics.end(), "--metrics: unknown metric '", m,
                  "'; use deletion, insertion, road, pointing, energy, infidelity, sensitivity, completeness, sanity "
                  "(or all)");
    metrics.insert(m);
  }
  SALIENT_CHECK(!metrics.empty(), "--metrics: no metric given");
  ExplainSettings settings = method_settings(a.flags);
  salient::check_settings(methods == std::vector<std::string>{"all"} ? std::vector<std::string>{"vanilla"} : methods,
                          settings);
  PerturbationCurveOptions curve;
  SALIENT_CHECK(a.step > 0 && a.step <= 1, "--step must be in (0, 1], got ", a.step);
  // Checked before any image runs: a late check would cost the user the whole run.
  SALIENT_CHECK(!metrics.count("sanity") || a.sanity_images >= 1, "--sanity-images must be >= 1, got ", a.sanity_images);
  // Unset is -1 (the library's "15 px at 224, scaled"); a value given must be a distance.
  SALIENT_CHECK(a.tolerance == -1 || (std::isfinite(a.tolerance) && a.tolerance >= 0),
                "--tolerance must be a distance in pixels >= 0, got ", a.tolerance);
  curve.step_fraction(a.step).substrate(substrate_from_string(a.substrate)).reduce(channel_reduce_from_string(a.reduce));
  if (settings.memory_budget) curve.memory_budget(*settings.memory_budget);
  const Precision precision = settings.precision.value_or(Precision::Float32);
  curve.precision(precision);
  const ChannelReduce reduce = channel_reduce_from_string(a.reduce);

  io::Preprocess pre = preprocess_from_flags(a.preprocess);
  ensure_writable_dir(a.out);
  Model model = load_model(a.model, a.device);
  int64_t channels = model.input_channels();
  if (channels != 1) channels = 3;
  std::vector<Entry> entries = load_manifest(a.data, pre, static_cast<int>(channels));
  if (methods == std::vector<std::string>{"all"})
    methods = suitable_methods(model, entries[0].shape, settings.layer);
  // "all" means every metric the manifest allows: localisation needs a box or mask on
  // every line (asked for by name, a missing one is an error below).
  if (all_metrics) {
    const auto named = split(a.metrics, ',');
    const bool by_name = std::find(named.begin(), named.end(), "pointing") != named.end() ||
                         std::find(named.begin(), named.end(), "energy") != named.end();
    auto bare = std::find_if(entries.begin(), entries.end(), [](const Entry& e) { return !e.has_box && !e.has_mask; });
    if (!by_name && bare != entries.end()) {
      metrics.erase("pointing"), metrics.erase("energy");
      std::cerr << "evaluate: --metrics all: pointing and energy skipped (" << bare->where << " has no \"box\" or \"mask\")\n";
    }
  }
  if (metrics.count("pointing") || metrics.count("energy"))
    for (const auto& e : entries)
      SALIENT_CHECK(e.has_box || e.has_mask, e.where, ": pointing/energy need a \"box\" or \"mask\" for every image; '",
                    e.name, "' has neither");
  // Every target against the model's classes before any work: a bad line fails the run
  // at once, named, not after the images before it.
  if (const at::Tensor probe = model.predict(entries[0].load()); probe.dim() == 2)
    for (const auto& e : entries)
      SALIENT_CHECK(e.target < probe.size(1), e.where, ": target ", e.target, " out of range: the model has ",
                    probe.size(1), " classes (0..", probe.size(1) - 1, ")");

  std::map<std::string, std::map<std::string, Stat>> stats;  // method -> metric -> values
  std::map<std::string, std::vector<at::Tensor>> del_curves, ins_curves, morf_curves, lerf_curves;
  at::Tensor fraction, road_fraction;
  RoadOptions road_options;
  road_options.reduce(reduce);
  if (settings.memory_budget) road_options.memory_budget(*settings.memory_budget);
  road_options.precision(precision);
  std::ostringstream per_image;
  const bool tty = ::isatty(2);
  const size_t total = entries.size();
  for (size_t i = 0; i < total; ++i) {
    const Entry& e = entries[i];
    // An error only this image's run meets (its size through the model, say) names its line.
    try {
      const at::Tensor x = e.load();
      at::Tensor out = model.predict(x);
      const int64_t predicted = out.argmax(1).item<int64_t>();
      const int64_t target = e.target >= 0 ? e.target : predicted;
      Target t = Target::per_sample({target});
      t.resolve(out);  // range check
      auto maps = explain(model, x, methods, t, settings);
      json row = {{"image", e.name}, {"target", target}, {"predicted", predicted}, {"methods", json::object()}};
      for (const auto& m : methods) {
        const at::Tensor& map = maps.at(m).map;
        json mj;
        if (metrics.count("deletion")) {
          Curve c = deletion(model, x, map, t, curve);
          mj["deletion"] = c.auc[0].item<double>();
          del_curves[m].push_back(c.scores[0]);
          fraction = c.fraction;
        }
        if (metrics.count("insertion")) {
          Curve c = insertion(model, x, map, t, curve);
          mj["insertion"] = c.auc[0].item<double>();
          ins_curves[m].push_back(c.scores[0]);
          fraction = c.fraction;
        }
        if (metrics.count("road")) {
          RoadResult r = road(model, x, map, t, road_options);
          mj["road"] = r.combined[0].item<double>();
          mj["road_morf"] = r.morf_mean[0].item<double>();
          mj["road_lerf"] = r.lerf_mean[0].item<double>();
          morf_curves[m].push_back(r.morf[0]);
          lerf_curves[m].push_back(r.lerf[0]);
          road_fraction = r.fraction;
        }
        if (metrics.count("pointing"))
          mj["pointing"] = (e.has_mask ? pointing_hit_mask(map[0], e.mask, a.tolerance, reduce)
                                       : pointing_hit(map[0], e.box, a.tolerance, reduce))
                               ? 1.0
                               : 0.0;
        if (metrics.count("energy"))
          mj["energy"] = e.has_mask ? energy_in_mask(map[0], e.mask, reduce) : energy_in_box(map[0], e.box, reduce);
        if (metrics.count("infidelity"))
          mj["infidelity"] = infidelity(model, x, map, t, InfidelityOptions().precision(precision))[0].item<double>();
        if (metrics.count("sensitivity")) {
          ExplainFn fn = [&](const Model& mm, const at::Tensor& xx, const Target& tt) {
            return explain(mm, xx, m, tt, settings);
          };
          mj["sensitivity"] = max_sensitivity(model, x, fn, t).item<double>();
        }
        // Completeness: |sum(attr) - (F(x) - F(x'))|, for the methods that have it (IG).
        if (metrics.count("completeness") && maps.at(m).delta.defined())
          mj["completeness"] = maps.at(m).delta.abs()[0].item<double>();
        for (auto it = mj.begin(); it != mj.end(); ++it) stats[m][it.key()].v.push_back(it.value().get<double>());
        row["methods"][m] = mj;
      }
      per_image << row.dump() << "\n";
    } catch (const salient::Error& err) {
      throw salient::Error(e.where + " ('" + e.name + "'): " + err.what());
    }
    if (tty)
      std::cerr << "\revaluate: " << (i + 1) << "/" << total << " images" << std::flush;
    else if ((i + 1) % std::max<size_t>(1, total / 10) == 0 || i + 1 == total)
      std::cerr << "evaluate: " << (i + 1) << "/" << total << " images\n";
  }
  if (tty) std::cerr << "\n";

  // Sanity: cascading randomisation on the first images (each step re-runs the method).
  std::map<std::string, std::vector<std::vector<double>>> sanity_curves;  // method -> [step][3]
  std::vector<std::string> blocks;
  if (metrics.count("sanity")) {
    const int64_t k = std::min<int64_t>(a.sanity_images, static_cast<int64_t>(total));
    std::vector<at::Tensor> xs;
    std::vector<int64_t> targets;
    for (int64_t i = 0; i < k; ++i) {
      SALIENT_CHECK(entries[i].shape == entries[0].shape, "sanity: the first ", k, " images must share one input size");
      xs.push_back(entries[i].load());
      targets.push_back(entries[i].target >= 0 ? entries[i].target : model.predict(xs.back()).argmax(1).item<int64_t>());
    }
    at::Tensor x = at::cat(xs);
    for (const auto& m : methods) {
      std::cerr << "evaluate: sanity check of " << m << " on " << k << " images\n";
      ExplainFn fn = [&](const Model& mm, const at::Tensor& xx, const Target& tt) {
        return explain(mm, xx, m, tt, settings);
      };
      SanityCurve sc = cascading_randomization(model, x, fn, Target::per_sample(targets));
      blocks = sc.blocks;
      const int64_t last = static_cast<int64_t>(sc.blocks.size()) - 1;
      for (int64_t i = 0; i < k; ++i) {
        stats[m]["sanity_spearman_abs"].v.push_back(sc.spearman_abs[last][i].item<double>());
        stats[m]["sanity_spearman"].v.push_back(sc.spearman[last][i].item<double>());
        stats[m]["sanity_ssim"].v.push_back(sc.ssim[last][i].item<double>());
      }
      for (int64_t s = 0; s <= last; ++s)
        sanity_curves[m].push_back({sc.spearman_abs[s].mean().item<double>(), sc.spearman[s].mean().item<double>(),
                                    sc.ssim[s].mean().item<double>()});
    }
  }

  // Outputs.
  auto path_in_out = [&](const std::string& name) { return (fs::path(a.out) / name).string(); };
  json summary = json::object();
  for (const auto& m : methods) {
    summary[m] = json::object();
    for (const auto& kv : stats[m]) summary[m][kv.first] = kv.second.summary();
  }
  std::vector<std::string> columns;
  for (const auto& m : methods)
    for (const auto& kv : stats[m])
      if (std::find(columns.begin(), columns.end(), kv.first) == columns.end()) columns.push_back(kv.first);
  std::ostringstream md, csv;
  md << "| method |";
  csv << "method";
  for (const auto& c : columns) md << " " << c << " |", csv << "," << c << "_mean," << c << "_std," << c << "_n";
  md << "\n|---|";
  for (size_t i = 0; i < columns.size(); ++i) md << "---:|";
  md << "\n";
  csv << "\n";
  for (const auto& m : methods) {
    md << "| " << m << " |";
    csv << m;
    for (const auto& c : columns) {
      if (!stats[m].count(c)) {
        md << " |";
        csv << ",,,";
        continue;
      }
      json s = stats[m][c].summary();
      md << " " << std::fixed << std::setprecision(3) << s["mean"].get<double>() << " ± " << s["std"].get<double>()
         << " |";
      csv << "," << std::setprecision(6) << s["mean"].get<double>() << "," << s["std"].get<double>() << ","
          << s["n"].get<size_t>();
    }
    md << "\n";
    csv << "\n";
  }
  io::write_file_atomic(path_in_out("summary.json"), summary.dump(2) + "\n");
  io::write_file_atomic(path_in_out("summary.md"), md.str());
  io::write_file_atomic(path_in_out("summary.csv"), csv.str());
  io::write_file_atomic(path_in_out("per_image.jsonl"), per_image.str());
  auto curve_plot = [&](const std::map<std::string, std::vector<at::Tensor>>& curves, const std::string& what,
                        const std::string& file, const at::Tensor& fr, const std::string& title,
                        const std::string& xlabel) {
    std::vector<render::Series> series;
    const at::Tensor frc = fr.to(at::kCPU, at::kFloat).contiguous();  // curves come from the model's device
    std::vector<double> xs(frc.data_ptr<float>(), frc.data_ptr<float>() + frc.numel());
    for (const auto& m : methods) {
      at::Tensor mean = at::stack(curves.at(m)).mean(0).to(at::kCPU, at::kDouble).contiguous();
      json s = stats[m][what].summary();
      std::ostringstream name;
      name << m << " " << std::fixed << std::setprecision(3) << s["mean"].get<double>();
      series.push_back({name.str(), xs, std::vector<double>(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel())});
    }
    io::write_png(path_in_out(file), render::plot(series, title, xlabel, "p(target)"));
  };
  if (metrics.count("deletion"))
    curve_plot(del_curves, "deletion", "deletion.png", fraction, "deletion curves (mean over images; legend: AUC)",
               "fraction of pixels removed");
  if (metrics.count("insertion"))
    curve_plot(ins_curves, "insertion", "insertion.png", fraction, "insertion curves (mean over images; legend: AUC)",
               "fraction of pixels revealed");
  if (metrics.count("road")) {
    curve_plot(morf_curves, "road_morf", "road_morf.png", road_fraction,
               "ROAD, most relevant removed first (legend: mean; lower is better)", "fraction of pixels imputed");
    curve_plot(lerf_curves, "road_lerf", "road_lerf.png", road_fraction,
               "ROAD, least relevant removed first (legend: mean; higher is better)", "fraction of pixels imputed");
  }
  if (metrics.count("sanity")) {
    std::string order = blocks.empty() ? "" : blocks.front();
    if (blocks.size() > 1) order += blocks.size() > 2 ? ", ..., " + blocks.back() : ", " + blocks.back();
    const std::string x_label = std::to_string(blocks.size()) + " blocks randomised in turn: " + order;
    // The three similarity measures of Adebayo et al., one plot each, stacked.
    const char* titles[] = {"Spearman |map| vs original map", "Spearman (signed) vs original map",
                            "SSIM vs original map"};
    std::vector<cv::Mat> plots;
    for (int column = 0; column < 3; ++column) {
      std::vector<render::Series> series;
      for (const auto& m : methods) {
        std::vector<double> xs, ys;
        for (size_t s = 0; s < sanity_curves[m].size(); ++s)
          xs.push_back(static_cast<double>(s + 1)), ys.push_back(sanity_curves[m][s][column]);
        series.push_back({m, xs, ys});
      }
      plots.push_back(render::plot(series, titles[column], x_label, "", 720, 360));
    }
    io::write_png(path_in_out("sanity.png"), render::stack_rows(plots));
    json sj = json::object();
    for (const auto& m : methods) sj[m] = sanity_curves[m];
    io::write_file_atomic(path_in_out("sanity.json"),
                          json({{"blocks", blocks}, {"columns", {"spearman_abs", "spearman", "ssim"}}, {"methods", sj}})
                                  .dump(2) + "\n");
  }
  std::cout << md.str() << "wrote " << a.out << " ("
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() << " s)\n";
  return 0;
}

}  // namespace

Runner add_evaluate(CLI::App& app) {
  auto a = std::make_shared<EvaluateArgs>();
  app.add_option("--model,-m", a->model, "TorchScript model file")->required();
  add_device_option(app, &a->device);
  app.add_option("--data", a->data,
                 "Manifest: one JSON object per line: {\"image\": F} or {\"input\": X.npy, \"index\": i}, "
                 "optional \"target\", \"box\": [x0,y0,x1,y1] (inclusive, model-input pixels) or \"mask\": M.png")
      ->required();
  app.add_option("--methods,--method", a->methods, "Comma-separated methods, or all")->capture_default_str();
  app.add_option("--metrics", a->metrics,
                 "deletion, insertion, road, pointing, energy, infidelity, sensitivity, completeness, sanity, or all "
                 "(pointing and energy only when every line has a box or mask)")
      ->capture_default_str();
  app.add_option("--out,-o", a->out, "Output directory")->required();
  add_preprocess_flags(app, &a->preprocess);
  app.add_option("--step", a->step, "Deletion/insertion: fraction of pixels per step")->capture_default_str();
  app.add_option("--substrate", a->substrate, "Deletion: zero, blur or mean")->capture_default_str();
  app.add_option("--reduce", a->reduce, "Map channels to pixel saliency: max-abs, sum or abs-sum")->capture_default_str();
  app.add_option("--tolerance", a->tolerance, "Pointing game tolerance in pixels (default 15 at 224, scaled)");
  app.add_option("--sanity-images", a->sanity_images, "Images the sanity check runs on")->capture_default_str();
  add_method_flags(app, &a->flags);
  app.footer("Writes DIR/summary.json ({method: {metric: {mean, std, n}}}), summary.md, summary.csv,\n"
             "per_image.jsonl, deletion.png, insertion.png, road_morf.png, road_lerf.png, sanity.png and sanity.json.");
  return [a] { return run_evaluate(*a); };
}

}  // namespace cli
}  // namespace salient

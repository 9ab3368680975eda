// salient batch: explain every image of a folder or manifest. Images decode on worker
// threads while the model runs; every output is written atomically and an image's record
// (records/<id>.json) is written last, so a record is the proof that its outputs are
// complete; re-running skips what has a valid record. results.jsonl and errors.jsonl are
// rebuilt from the records at the end (and on Ctrl-C).
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "cli.hpp"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // methods stay in --methods order

namespace salient {
namespace cli {

namespace {

struct BatchArgs {
  std::string model, images, data, out;
  std::string device = "cpu";
  std::string methods = "gradcam";
  std::string metrics;
  std::string batch_size = "auto";
  std::string shard;
  std::string labels;
  PreprocessFlags preprocess;
  std::string colormap = "jet";
  int jobs = 2;
  bool report = false, quiet = false;
  int64_t progress_every = 100;
  int64_t max_pixels = 50'000'000;
  int64_t min_side = 8;
  MethodFlags flags;
};

// One image to explain: a manifest entry (key unique: the path relative to --images, or
// the manifest's name) and its output name.
struct Item : ManifestEntry {
  std::string id;  // file-system-safe output name
};

// What a worker hands to the model: the input or why there is none.
struct Loaded {
  std::string error;
  at::Tensor x;  // [1,C,H,W]
  cv::Mat display;
};

std::atomic<int> g_signal{0};
extern "C" void on_signal(int s) { g_signal = s; }

std::string hex64(uint64_t v) {
  std::ostringstream s;
  s << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A readable, unique, file-system-safe name: the key's safe characters and a hash.
std::string safe_id(const std::string& key) {
  std::string stem;
  for (char c : fs::path(key).stem().string()) {
    if (stem.size() >= 60) break;
    stem += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  }
  return stem + "-" + hex64(fnv1a(key)).substr(0, 10);
}

bool is_image_file(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

std::vector<Item> list_images(const std::string& dir) {
  SALIENT_CHECK(fs::is_directory(dir), "--images '", dir, "' is not a directory");
  std::vector<Item> items;
  const auto opts = fs::directory_options::skip_permission_denied;
  for (auto it = fs::recursive_directory_iterator(dir, opts); it != fs::recursive_directory_iterator(); ++it) {
    std::error_code ec;
    // A link whose target is gone is listed, so that it is reported rather than skipped.
    const bool dangling = it->is_symlink(ec) && !fs::exists(it->path(), ec);
    if (!(it->is_regular_file(ec) || dangling) || !is_image_file(it->path())) continue;
    Item item;
    item.key = fs::relative(it->path(), dir).generic_string();
    item.source = it->path().string();
    items.push_back(item);
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
  return items;
}

std::vector<Item> items_of_manifest(const std::string& path) {
  std::vector<Item> items;
  std::set<std::string> keys;
  for (const ManifestEntry& m : read_manifest(path)) {
    SALIENT_CHECK(keys.insert(m.key).second, m.where, ": '", m.key, "' is listed twice");
    Item item;
    static_cast<ManifestEntry&>(item) = m;
    items.push_back(item);
  }
  return items;
}

// File size and modification time: a changed source is explained again.
json source_stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return nullptr;
  return {{"size", static_cast<int64_t>(st.st_size)}, {"mtime", static_cast<int64_t>(st.st_mtime)}};
}

int64_t bytes_of(const fs::path& p) {
  std::error_code ec;
  auto s = fs::file_size(p, ec);
  return ec ? -1 : static_cast<int64_t>(s);
}

// Decodes and prepares one item (worker thread). Bad images become an error, not a throw.
Loaded load_item(const Item& item, const io::Preprocess& pre, int channels, const BatchArgs& a,
                 std::mutex* npy_mutex, std::map<std::string, at::Tensor>* npy_cache) {
  Loaded l;
  try {
    if (item.index >= 0) {
      at::Tensor t;
      {
        std::lock_guard<std::mutex> lock(*npy_mutex);
        auto it = npy_cache->find(item.source);
        if (it == npy_cache->end()) it = npy_cache->emplace(item.source, io::read_npy(item.source)).first;
        t = it->second;
      }
      if (t.dim() == 3) t = t.unsqueeze(0);
      SALIENT_CHECK(t.dim() == 4 && at::isFloatingType(t.scalar_type()), "'", item.source,
                    "' must hold float32 [N,C,H,W]");
      SALIENT_CHECK(item.index_given || t.size(0) == 1, "'", item.source, "' holds ", t.size(0),
                    " samples: say which with \"index\"");
      SALIENT_CHECK(item.index < t.size(0), "index ", item.index, " out of range (", t.size(0), " rows)");
      l.x = t.narrow(0, item.index, 1).to(at::kFloat).contiguous();
      SALIENT_CHECK(at::isfinite(l.x).all().item<bool>(), "the tensor contains NaN or Inf");
      at::Tensor shown = l.x[0];
      shown = (shown - shown.min()) / (shown.max() - shown.min() + 1e-12);
      l.display = io::tensor_to_image(shown, io::Preprocess());
    } else {
      cv::Mat rgb = io::read_image(item.source);
      SALIENT_CHECK(std::min(rgb.rows, rgb.cols) >= a.min_side, "image is ", rgb.cols, "x", rgb.rows,
                    ", smaller than --min-side ", a.min_side, " px");
      SALIENT_CHECK(static_cast<int64_t>(rgb.rows) * rgb.cols <= a.max_pixels, "image is ", rgb.cols, "x", rgb.rows,
                    " (", static_cast<int64_t>(rgb.rows) * rgb.cols, " pixels), over --max-pixels ", a.max_pixels);
      auto p = io::prepare(rgb, pre, channels);
      l.x = p.tensor;
      l.display = p.display;
    }
  } catch (const std::exception& e) {
    l.error = e.what();
    l.x = at::Tensor();
  }
  return l;
}

// Decoding on worker threads, handed over in order; at most `capacity` ahead.
class Loader {
 public:
  Loader(const std::vector<const Item*>& items, size_t capacity, int jobs,
         std::function<Loaded(const Item&)> load)
      : items_(items), slots_(items.size()), capacity_(capacity), load_(std::move(load)) {
    for (int j = 0; j < std::max(1, jobs); ++j) threads_.emplace_back([this] { work(); });
  }
  ~Loader() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Loaded take(size_t i) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return slots_[i].has_value(); });
    Loaded l = std::move(*slots_[i]);
    slots_[i].reset();
    consumed_ = i + 1;
    cv_.notify_all();
    return l;
  }

 private:
  void work() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stop_ || next_ >= items_.size() || next_ < consumed_ + capacity_; });
        if (stop_ || next_ >= items_.size()) return;
        i = next_++;
      }
      Loaded l = load_(*items_[i]);
      {
        std::lock_guard<std::mutex> lock(m_);
        slots_[i] = std::move(l);
      }
      cv_.notify_all();
    }
  }
  const std::vector<const Item*>& items_;
  std::vector<std::optional<Loaded>> slots_;
  size_t capacity_, next_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::function<Loaded(const Item&)> load_;
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

class Progress {
 public:
  Progress(size_t total, bool quiet, int64_t every) : total_(total), quiet_(quiet), every_(std::max<int64_t>(1, every)) {
    tty_ = ::isatty(2);
    t0_ = std::chrono::steady_clock::now();
  }
  void update(size_t done) {
    if (quiet_ || total_ == 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double rate = s > 0 ? static_cast<double>(done) / s : 0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
    std::ostringstream line;
    line << done << "/" << total_ << " images  " << std::fixed << std::setprecision(1) << rate << " img/s  ETA "
         << clock(eta);
    if (tty_) {
      const int width = 30, filled = static_cast<int>(width * done / total_);
      std::cerr << "\r[" << std::string(filled, '#') << std::string(width - filled, '.') << "] " << line.str()
                << "   " << std::flush;
      if (done == total_) std::cerr << "\n";
    } else if (done / static_cast<size_t>(every_) > printed_ / static_cast<size_t>(every_) || done == total_) {
      if (done != printed_) std::cerr << "batch: " << line.str() << "\n";
    }
    printed_ = done;
  }

 private:
  static std::string clock(double s) {
    const int64_t t = static_cast<int64_t>(s + 0.5);
    std::ostringstream o;
    if (t >= 3600) o << t / 3600 << "h";
    if (t >= 60) o << (t / 60) % 60 << "m";
    o << t % 60 << "s";
    return o.str();
  }
  size_t total_, printed_ = 0;
  bool quiet_, tty_ = false;
  int64_t every_;
  std::chrono::steady_clock::time_point t0_;
};

// A record is trusted only when it parses, was made with this configuration from this
// version of the source, and every file it names is there with the recorded size.
bool valid_record(const fs::path& out, const fs::path& record, const Item& item, const std::string& config,
                  json* parsed) {
  std::ifstream f(record);
  if (!f.good()) return false;
  json j;
  try {
    j = json::parse(f);
  } catch (...) {
    return false;
  }
  if (!j.is_object() || j.value("config", "") != config || j.value("key", "") != item.key) return false;
  if (j.value("source_stamp", json()) != source_stamp(item.source)) return false;
  if (j.contains("files")) {
    for (auto it = j["files"].begin(); it != j["files"].end(); ++it)
      if (bytes_of(out / it.key()) != it.value().get<int64_t>()) return false;
  }
  *parsed = std::move(j);
  return true;
}

// Leftovers of an interrupted run: temporary files are never trusted, so they go. Only
// batch's own folders and files are swept; the rest of the folder is the user's.
void remove_temporaries(const fs::path& out) {
  std::error_code ec;
  auto is_temp = [](const fs::path& p) { return p.filename().string().find(".tmp.") != std::string::npos; };
  for (const char* sub : {"records", "maps", "overlays", "inputs", "panels"})
    for (auto it = fs::recursive_directory_iterator(out / sub, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
      if (it->is_regular_file(ec) && is_temp(it->path())) fs::remove(it->path(), ec);
  for (auto it = fs::directory_iterator(out, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool ours = name.rfind("results", 0) == 0 || name.rfind("errors", 0) == 0 || name.rfind("report.html", 0) == 0;
    if (ours && it->is_regular_file(ec) && is_temp(it->path())) fs::remove(it->path(), ec);
  }
}

int run_batch(const BatchArgs& a) {
  SALIENT_CHECK(a.images.empty() != a.data.empty(), "give either --images DIR or --data manifest.jsonl");
  std::vector<std::string> methods = parse_methods(a.methods);
  const bool all = methods == std::vector<std::string>{"all"};
  ExplainSettings settings = method_settings(a.flags);
  check_settings(all ? std::vector<std::string>{"vanilla"} : methods, settings);
  std::set<std::string> metrics;
  for (const auto& m : split(a.metrics, ',')) {
    SALIENT_CHECK(m == "deletion" || m == "insertion" || m == "road" || m == "pointing" || m == "energy",
                  "--metrics: unknown metric '", m, "'; batch computes deletion, insertion, road, pointing, energy");
    metrics.insert(m);
  }
  int64_t shard = 0, shards = 1;
  if (!a.shard.empty()) {
    auto parts = split(a.shard, '/');
    SALIENT_CHECK(parts.size() == 2, "--shard must be i/n (e.g. 0/4), got '", a.shard, "'");
    shard = parse_int(parts[0], "--shard");
    shards = parse_int(parts[1], "--shard");
    SALIENT_CHECK(shards >= 1 && shard >= 0 && shard < shards, "--shard i/n needs 0 <= i < n, got '", a.shard, "'");
  }
  int64_t fixed_batch = 0;
  if (a.batch_size != "auto") {
    fixed_batch = parse_int(a.batch_size, "--batch-size");
    SALIENT_CHECK(fixed_batch >= 1, "--batch-size must be auto or >= 1");
  }
  SALIENT_CHECK(a.jobs >= 1, "--jobs must be >= 1");
  SALIENT_CHECK(a.min_side >= 1 && a.max_pixels >= 1, "--min-side and --max-pixels must be >= 1");
  RenderSettings render;
  render.colormap = render::colormap_from_string(a.colormap);
  io::Preprocess pre = preprocess_from_flags(a.preprocess);
  std::vector<std::string> labels;
  if (!a.labels.empty()) labels = io::read_labels(a.labels);

  std::vector<Item> items = a.images.empty() ? items_of_manifest(a.data) : list_images(a.images);
  SALIENT_CHECK(!items.empty(), "--images '", a.images, "' holds no PNG or JPEG files");
  if ((metrics.count("pointing") || metrics.count("energy")))
    for (const auto& it : items)
      SALIENT_CHECK(it.has_box, "--metrics pointing/energy need a \"box\" for every image; '", it.key, "' has none");
  std::vector<Item> mine;
  for (size_t i = 0; i < items.size(); ++i)
    if (static_cast<int64_t>(i % static_cast<size_t>(shards)) == shard) mine.push_back(items[i]);
  for (auto& it : mine) it.id = safe_id(it.key);

  const fs::path out(a.out);
  ensure_writable_dir(a.out);
  for (const char* sub : {"records", "maps", "overlays", "inputs", "panels"}) fs::create_directories(out / sub);
  remove_temporaries(out);

  Model model = load_model(a.model, a.device);
  int64_t channels = model.input_channels();
  if (channels != 1) channels = 3;

  // Everything that shapes an output; a record made under another configuration is redone.
  json cfg = {{"model", fs::absolute(a.model).string()},
              {"model_stamp", source_stamp(a.model)},
              {"methods", a.methods},
              {"metrics", a.metrics},
              {"preprocess", pre.describe()},
              {"colormap", a.colormap},
              {"labels", a.labels},
              {"min_side", a.min_side},
              {"max_pixels", a.max_pixels}};
  for (const auto& kv : a.flags.given)
    if (kv.second && kv.second->count() > 0) cfg["flags"][kv.first] = kv.second->as<std::string>();
  const std::string config = hex64(fnv1a(cfg.dump()));

  // Resume: what has a valid record is skipped.
  std::vector<json> records(mine.size());
  std::vector<const Item*> todo;
  size_t skipped = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (valid_record(out, out / "records" / (mine[i].id + ".json"), mine[i], config, &records[i])) {
      ++skipped;
    } else {
      records[i] = nullptr;
      todo.push_back(&mine[i]);
    }
  }

  const std::string suffix = shards > 1 ? "-" + std::to_string(shard) + "-of-" + std::to_string(shards) : "";
  auto write_lists = [&]() {
    std::ostringstream results, errors;
    for (const auto& r : records) {
      if (r.is_null()) continue;
      json line = r;
      line.erase("config");
      line.erase("source_stamp");
      line.erase("files");
      (r.value("status", "") == "ok" ? results : errors) << line.dump() << "\n";
    }
    io::write_file_atomic((out / ("results" + suffix + ".jsonl")).string(), results.str());
    io::write_file_atomic((out / ("errors" + suffix + ".jsonl")).string(), errors.str());
  };

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::mutex npy_mutex;
  std::map<std::string, at::Tensor> npy_cache;
  size_t done = 0, failed = 0;
  Progress progress(todo.size(), a.quiet, a.progress_every);
  int64_t batch = fixed_batch;
  bool announced_layer = false;

  auto write_error = [&](size_t pos, const std::string& reason) {
    const Item& item = mine[pos];
    json r = {{"key", item.key},           {"source", item.source},
              {"status", "error"},         {"reason", reason},
              {"config", config},          {"source_stamp", source_stamp(item.source)}};
    io::write_file_atomic((out / "records" / (item.id + ".json")).string(), r.dump() + "\n");
    records[pos] = r;
    ++failed;
  };

  // Explains and writes one group of same-shape inputs.
  auto flush = [&](std::vector<std::pair<size_t, Loaded>>& group) {
    if (group.empty()) return;
    std::vector<at::Tensor> xs;
    for (auto& g : group) xs.push_back(g.second.x);
    at::Tensor x = at::cat(xs);
    std::vector<std::string> ms = methods;
    if (all) ms = suitable_methods(model, x.sizes().slice(1).vec(), settings.layer);
    if (!announced_layer && settings.layer.empty()) {
      for (const auto& m : ms)
        if (method_info(m).layer && !a.quiet) {
          std::cerr << default_cam_layer_note(model, x.sizes().slice(1).vec()) << "\n";
          break;
        }
      announced_layer = true;
    }
    // The classes: the manifest's, else the predicted ones. Most methods compute the clean
    // output anyway, so a separate forward runs only when the targets are mixed or no
    // method gives the output.
    size_t given = 0;
    for (const auto& g : group) given += mine[g.first].target >= 0 ? 1 : 0;
    at::Tensor logits;
    std::vector<int64_t> targets;
    auto fill_targets = [&] {
      targets.clear();
      for (size_t j = 0; j < group.size(); ++j) {
        const Item& item = mine[group[j].first];
        targets.push_back(item.target >= 0 ? item.target : logits[static_cast<int64_t>(j)].argmax().item<int64_t>());
      }
    };
    if (given > 0 && given < group.size()) {
      logits = model.predict(x);
      fill_targets();
    } else if (given == group.size()) {
      fill_targets();
    }
    auto results = explain(model, x, ms, targets.empty() ? Target::predicted() : Target::per_sample(targets), settings);
    for (const auto& m : ms)
      if (!logits.defined() && results.at(m).output.defined()) logits = results.at(m).output.detach();
    if (!logits.defined()) logits = model.predict(x);
    if (targets.empty()) {
      fill_targets();
      // A method that ran on the frozen graph may see a near-tie the other way: explain
      // the one class per image everywhere.
      const at::Tensor t = at::tensor(targets);
      for (const auto& m : ms)
        if (!results.at(m).targets.defined() || !results.at(m).targets.equal(t))
          results[m] = explain(model, x, m, Target::per_sample(targets), settings);
    }
    at::Tensor probs = salient::probabilities(logits.to(at::kFloat));
    for (size_t j = 0; j < group.size(); ++j) {
      const size_t pos = group[j].first;
      if (!records[pos].is_null()) continue;  // done before; in the batch for its numerics only
      const Item& item = mine[pos];
      const cv::Mat& display = group[j].second.display;
      const int64_t jj = static_cast<int64_t>(j);
      const int64_t predicted = logits[jj].argmax().item<int64_t>();
      const double probability = probs[jj][predicted].item<double>();
      json r = {{"key", item.key},
                {"source", item.source},
                {"status", "ok"},
                {"predicted", predicted},
                {"probability", probability},
                {"target", targets[j]},
                {"target_probability", probs[jj][targets[j]].item<double>()},
                {"methods", json::object()}};
      if (item.index >= 0) r["index"] = item.index;
      if (!labels.empty()) r["predicted_label"] = label_of(labels, predicted), r["target_label"] = label_of(labels, targets[j]);
      json files = json::object();
      auto keep = [&](const std::string& rel) { files[rel] = bytes_of(out / rel); };
      const std::string input_rel = "inputs/" + item.id + ".png";
      io::write_png((out / input_rel).string(), display);
      keep(input_rel);
      r["input"] = input_rel;
      fs::create_directories(out / "overlays" / item.id);
      fs::create_directories(out / "maps" / item.id);
      std::vector<render::Cell> cells{{"input", display}};
      for (const auto& m : ms) {
        const Attribution& at = results.at(m);
        at::Tensor map = at.map.narrow(0, jj, 1);
        const std::string map_rel = "maps/" + item.id + "/" + m + ".npy";
        const std::string overlay_rel = "overlays/" + item.id + "/" + m + ".png";
        io::write_npy((out / map_rel).string(), map);
        cv::Mat view = overlay_map(display, map[0], is_cam_method(m), render);
        io::write_png((out / overlay_rel).string(), view);
        keep(map_rel);
        keep(overlay_rel);
        cells.push_back({m, view});
        json mj = {{"map", map_rel}, {"overlay", overlay_rel}, {"shape", map.sizes().vec()}};
        if (!metrics.empty()) {
          json mt = json::object();
          at::Tensor xi = x.narrow(0, jj, 1);
          Target ti = Target::index(targets[j]);
          if (metrics.count("deletion")) mt["deletion"] = deletion(model, xi, map, ti).auc[0].item<double>();
          if (metrics.count("insertion")) mt["insertion"] = insertion(model, xi, map, ti).auc[0].item<double>();
          if (metrics.count("road")) mt["road"] = road(model, xi, map, ti).combined[0].item<double>();
          if (metrics.count("pointing") || metrics.count("energy")) {
            SALIENT_CHECK(item.box[0] <= item.box[2] && item.box[1] <= item.box[3] && item.box[0] >= 0 &&
                              item.box[1] >= 0 && item.box[2] < xi.size(3) && item.box[3] < xi.size(2),
                          "box is not inside the ", xi.size(2), "x", xi.size(3), " model input");
            if (metrics.count("pointing")) mt["pointing"] = pointing_hit(map[0], item.box) ? 1.0 : 0.0;
            if (metrics.count("energy")) mt["energy"] = energy_in_box(map[0], item.box);
          }
          mj["metrics"] = mt;
        }
        if (at.delta.defined()) mj["delta"] = at.delta[jj].item<double>();
        r["methods"][m] = mj;
      }
      const std::string panel_rel = "panels/" + item.id + ".png";
      const std::string caption = panel_caption(labels, predicted, probability, targets[j]);
      io::write_png((out / panel_rel).string(),
                    render::panel(cells, caption, std::max(160, std::min(320, display.cols)), 8));
      keep(panel_rel);
      r["panel"] = panel_rel;
      r["files"] = files;
      r["config"] = config;
      r["source_stamp"] = source_stamp(item.source);
      // Last: the record vouches for the files above.
      io::write_file_atomic((out / "records" / (item.id + ".json")).string(), r.dump() + "\n");
      records[pos] = r;
      ++done;
    }
    group.clear();
  };

  // A group that fails as a whole is retried one image at a time, so that one bad input
  // (e.g. a target out of range) fails alone.
  auto flush_safely = [&](std::vector<std::pair<size_t, Loaded>>& group) {
    try {
      std::vector<std::pair<size_t, Loaded>> copy = group;
      flush(copy);
      group.clear();
    } catch (const std::exception&) {
      for (auto& g : group) {
        if (!records[g.first].is_null()) continue;
        std::vector<std::pair<size_t, Loaded>> one{g};
        try {
          flush(one);
        } catch (const c10::Error& e) {
          write_error(g.first, e.what_without_backtrace());
        } catch (const std::exception& e) {
          write_error(g.first, e.what());
        }
      }
      group.clear();
    }
  };

  // Batches are fixed slices of the shard's sorted list, [g*B, (g+1)*B): a resumed run puts
  // every image in the same batch as an uninterrupted one would (batch composition
  // changes the floating-point results in the last bits), re-running the finished images
  // of a partly done slice without rewriting them.
  if (batch == 0 && !todo.empty()) {  // auto: from the memory budget and the first input's size
    for (const Item& item : mine) {
      Loaded probe = load_item(item, pre, static_cast<int>(channels), a, &npy_mutex, &npy_cache);
      if (!probe.error.empty()) continue;
      const int64_t budget = settings.memory_budget.value_or(int64_t(1) << 30);
      batch = std::clamp<int64_t>(budget / std::max<int64_t>(1, model.bytes_per_sample(probe.x.sizes().slice(1).vec())),
                                  1, 32);
      break;
    }
  }
  batch = std::max<int64_t>(batch, 1);
  std::vector<const Item*> work;  // what to load, in order
  std::vector<size_t> work_pos;
  std::vector<bool> slice_end;     // the item closes its slice
  for (size_t g0 = 0; g0 < mine.size(); g0 += static_cast<size_t>(batch)) {
    const size_t g1 = std::min(mine.size(), g0 + static_cast<size_t>(batch));
    bool pending = false;
    for (size_t i = g0; i < g1; ++i) pending = pending || records[i].is_null();
    if (!pending) continue;
    for (size_t i = g0; i < g1; ++i)
      if (records[i].is_null() || records[i].value("status", "") == "ok") {
        work.push_back(&mine[i]);
        work_pos.push_back(i);
        slice_end.push_back(false);
      }
    if (!slice_end.empty()) slice_end.back() = true;
  }

  bool interrupted = false;
  {
    Loader loader(work, std::max<size_t>(16, 4 * static_cast<size_t>(batch)), a.jobs,
                  [&](const Item& item) { return load_item(item, pre, static_cast<int>(channels), a, &npy_mutex, &npy_cache); });
    std::vector<std::pair<size_t, Loaded>> group;
    for (size_t k = 0; k < work.size(); ++k) {
      if (group.empty() && g_signal) {
        interrupted = true;
        break;
      }
      Loaded l = loader.take(k);
      const size_t pos = work_pos[k];
      if (!l.error.empty()) {
        if (records[pos].is_null()) write_error(pos, l.error);
      } else {
        if (!group.empty() && group.front().second.x.sizes() != l.x.sizes()) flush_safely(group);
        group.emplace_back(pos, std::move(l));
      }
      if (slice_end[k]) flush_safely(group);
      progress.update(done + failed);
    }
  }
  write_lists();
  size_t failed_total = 0, ok_total = 0;
  for (const auto& r : records)
    if (!r.is_null()) (r.value("status", "") == "ok" ? ok_total : failed_total)++;
  if (a.report && ok_total + failed_total > 0) write_report(a.out);
  const std::string errors_file = (out / ("errors" + suffix + ".jsonl")).string();
  std::ostringstream last;
  last << "done " << done << ", failed " << failed << ", skipped " << skipped;
  if (failed_total > failed) last << " (" << failed_total - failed << " of them failed before)";
  if (interrupted) last << ", interrupted with " << (mine.size() - ok_total - failed_total) << " left: run the same command to finish";
  if (failed_total > 0) last << "; reasons in " << errors_file;
  std::cout << last.str() << "\n";
  if (interrupted) return 130;
  return failed_total > 0 ? 1 : 0;
}

}  // namespace

Runner add_batch(CLI::App& app) {
  auto a = std::make_shared<BatchArgs>();
  app.add_option("--model,-m", a->model, "TorchScript model file")->required();
  add_device_option(app, &a->device);
  app.add_option("--images", a->images, "Folder of PNG/JPEG images, read recursively");
  app.add_option("--data", a->data,
                 "Manifest: one JSON object per line: {\"image\": F} or {\"input\": X.npy, \"index\": i}, optional "
                 "\"target\" and \"box\"");
  app.add_option("--methods,--method", a->methods, "Comma-separated methods, or all")->capture_default_str();
  app.add_option("--metrics", a->metrics, "Per-image metrics: deletion, insertion, road, pointing, energy (box needed)");
  app.add_option("--out,-o", a->out, "Output directory")->required();
  app.add_flag("--report", a->report, "Write DIR/report.html");
  app.add_option("--batch-size", a->batch_size, "auto (from --memory-budget) or images per batch")->capture_default_str();
  app.add_option("--jobs", a->jobs, "Threads decoding images")->capture_default_str();
  app.add_option("--shard", a->shard, "i/n: explain only images i, i+n, i+2n, ... of the sorted list");
  app.add_flag("--quiet,-q", a->quiet, "No progress output");
  app.add_option("--progress-every", a->progress_every, "Without a terminal: a line per this many images")
      ->capture_default_str();
  app.add_option("--max-pixels", a->max_pixels, "Larger images are reported, not explained")->capture_default_str();
  app.add_option("--min-side", a->min_side, "Smaller images are reported, not explained")->capture_default_str();
  app.add_option("--labels", a->labels, "Class names, one per line");
  add_preprocess_flags(app, &a->preprocess);
  app.add_option("--colormap", a->colormap, "jet, viridis, inferno or turbo")->capture_default_str();
  add_method_flags(app, &a->flags);
  app.footer(
      "Writes per image: records/<id>.json, inputs/<id>.png, overlays/<id>/<method>.png, maps/<id>/<method>.npy\n"
      "and panels/<id>.png; then results.jsonl and errors.jsonl (results-i-of-n.jsonl with --shard).\n"
      "Re-running skips images with complete outputs. Exit code 0: all explained; 1: some images failed\n"
      "(now or in an earlier run); 2: bad usage; 130: interrupted.");
  return [a] { return run_batch(*a); };
}

}  // namespace cli
}  // namespace salient

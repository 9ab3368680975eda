// salient_bench: each method's time as a ratio to the raw LibTorch passes it minimally
// needs, measured in the same run, plus peak memory of a long SmoothGrad.
//
//   salient_bench --models build/bench --demo models/demo/fashion96.pt --markdown docs/BENCHMARKS.md
//
// Timings interleave method and baseline (A B A B ...) after warm-up. Each row reports
// the fastest run of each and, per adjacent pair, the ratio method / baseline: the
// median of those ratios and its spread say whether a goal is met beyond this machine's
// noise.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "salient/salient.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string self;  // argv[0], to run the memory measurement in a fresh process
  std::string models = "build/bench";
  std::string demo = "models/demo/fashion96.pt";
  std::string markdown;
  int repeats = 9;
  int64_t rss_samples = 1000;
  bool skip_rss = false;
  bool rss_child = false;
  std::string rss_method = "smoothgrad";  // in the child: smoothgrad | integrated_gradients | deletion | rise
  std::string cli;                        // the salient binary, for the batch throughput rows
  bool skip_batch = false;
  bool default_malloc = false;  // glibc's defaults instead of salient::retain_freed_memory()
  bool alloc_child = false;     // in the child: forward costs under glibc's defaults
  int threads = static_cast<int>(std::thread::hardware_concurrency());
};

double seconds(const std::function<void()>& f) {
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The fastest of the runs: interference from the rest of the machine only ever adds
// time (here it is bursty: a stolen CPU doubles a two-thread run), so the minimum is
// the steadiest estimate of what a call costs.
double fastest(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

// The q-quantile of v (linear between order statistics).
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(at);
  return i + 1 < v.size() ? v[i] + (at - static_cast<double>(i)) * (v[i + 1] - v[i]) : v[i];
}

struct Row {
  std::string model, what, baseline;
  double method_ms = 0, baseline_ms = 0, goal = 0;
  // Per-pair ratios: their median and quartiles. A pair runs back to back, so slow drift
  // of the machine (here the same baseline's fastest run moves by up to 30% between rows
  // of one run) cancels in it, where the two minima may come from different moments.
  double pair_median = 0, pair_q1 = 0, pair_q3 = 0;
  double ratio() const { return method_ms / baseline_ms; }
  // A baseline timed on part of the work and scaled up by f.
  void scale_baseline(double f) {
    baseline_ms *= f;
    pair_median /= f, pair_q1 /= f, pair_q3 /= f;
  }
  // met: the upper quartile of the pairs is within the goal; unmet: the lower quartile is
  // above it; otherwise the goal lies inside the noise.
  std::string verdict() const {
    if (goal <= 0) return "-";
    if (pair_q3 <= goal) return "met";
    if (pair_q1 > goal) return "unmet";
    return "within noise";
  }
};

// Whether salient::retain_freed_memory() is in effect (else glibc's defaults).
bool g_retained = false;

// --only: rows whose name starts with one of these (empty: all).
std::vector<std::string> g_only;
std::string g_infer_runner;  // Model::infer_runner() of the models benched

bool selected(const std::string& what) {
  if (g_only.empty()) return true;
  return std::any_of(g_only.begin(), g_only.end(), [&](const std::string& o) { return what.rfind(o, 0) == 0; });
}

std::string fixed2(double v) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << v;
  return s.str();
}

// goal 0: a row that times part of another (no goal of its own).
Row compare(const std::string& model, const std::string& what, const std::string& baseline, double goal,
            const std::function<void()>& method, const std::function<void()>& base, int repeats) {
  if (!selected(what)) return Row{model, what, baseline, -1, 1, goal};
  for (int i = 0; i < 2; ++i) method(), base();  // warm-up (the profiling executor needs two runs)
  // Small models get more runs: at least about two seconds of baseline time.
  repeats = std::max(repeats, static_cast<int>(2.0 / std::max(1e-4, seconds(base))));
  std::vector<double> m, b;
  for (int i = 0; i < repeats; ++i) {
    m.push_back(seconds(method));
    b.push_back(seconds(base));
  }
  std::vector<double> pairs;
  for (size_t i = 0; i < m.size(); ++i) pairs.push_back(m[i] / b[i]);
  Row r{model, what, baseline, 1e3 * fastest(m), 1e3 * fastest(b), goal,
        quantile(pairs, 0.5), quantile(pairs, 0.25), quantile(pairs, 0.75)};
  std::cout << std::left << std::setw(10) << model << std::setw(16) << what << std::right << std::fixed
            << std::setprecision(1) << std::setw(9) << r.method_ms << " ms  vs " << std::setw(9) << r.baseline_ms
            << " ms  " << std::setw(36) << std::left << baseline << " ratio " << std::setprecision(3) << r.ratio()
            << ", pairs " << r.pair_median << " [" << r.pair_q1 << ", " << r.pair_q3 << "]"
            << (goal > 0 ? "  (goal <= " + fixed2(goal) + ": " + r.verdict() + ")" : "  (part of a row, no goal)")
            << std::endl;
  return r;
}

int64_t status_kib(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::strlen(key)));
  return -1;
}

struct RssResult {
  int64_t before_kib = 0, peak_kib = 0, chunk = 0, per_sample = 0;
  double seconds = 0;
};

// In the child: load ResNet-50, then measure the peak RSS of one long SmoothGrad,
// Integrated Gradients, deletion or RISE (both forward-only rows) run.
int rss_child(const Options& o) {
  salient::Model model = salient::Model::load((fs::path(o.models) / "resnet50.pt").string());
  at::Tensor x = at::randn({1, 3, 224, 224});
  RssResult r;
  const bool forward_only = o.rss_method == "deletion" || o.rss_method == "rise";
  r.per_sample = forward_only ? model.forward_bytes_per_sample({3, 224, 224}) : model.bytes_per_sample({3, 224, 224});
  r.chunk = forward_only ? salient::forward_chunk_rows(model, x, salient::SmoothGradOptions().memory_budget())
                         : salient::chunk_rows(model, x, salient::SmoothGradOptions().memory_budget());
  // The map is made before the baseline reading: only the run itself is measured.
  at::Tensor map = forward_only ? at::rand({1, 1, 224, 224}) : at::Tensor();
  r.before_kib = status_kib("VmRSS:");
  r.seconds = seconds([&] {
    if (o.rss_method == "rise")  // rss_samples masks
      salient::rise(model, x, salient::Target::index(3), salient::RiseOptions().n_masks(o.rss_samples));
    else if (forward_only)  // rss_samples steps: that many + 1 forward-only rows
      salient::deletion(model, x, map, salient::Target::index(3),
                        salient::PerturbationCurveOptions().step_fraction(1.0 / static_cast<double>(o.rss_samples)));
    else if (o.rss_method == "integrated_gradients")
      salient::integrated_gradients(model, x, salient::Target::index(3),
                                    salient::IntegratedGradientsOptions().n_steps(o.rss_samples));
    else
      salient::smoothgrad(model, x, salient::Target::index(3), salient::SmoothGradOptions().n_samples(o.rss_samples));
  });
  r.peak_kib = status_kib("VmHWM:");
  std::cout << r.before_kib << " " << r.peak_kib << " " << r.chunk << " " << r.per_sample << " " << r.seconds << "\n";
  return 0;
}

RssResult rss_in_child(const Options& o, const std::string& method) {
  std::string cmd = "'" + o.self + "' --rss-child --rss-method " + method + " --models '" + o.models + "' --rss-samples " +
                    std::to_string(o.rss_samples) + " --threads " + std::to_string(o.threads) +
                    (o.default_malloc ? " --default-malloc" : "");
  FILE* p = popen(cmd.c_str(), "r");
  RssResult r;
  if (!p) throw std::runtime_error("cannot run " + cmd);
  long long before = 0, peak = 0, chunk = 0, per = 0;
  double secs = 0;
  int got = std::fscanf(p, "%lld %lld %lld %lld %lf", &before, &peak, &chunk, &per, &secs);
  if (pclose(p) != 0 || got != 5) throw std::runtime_error("memory measurement failed: " + cmd);
  r.before_kib = before, r.peak_kib = peak, r.chunk = chunk, r.per_sample = per, r.seconds = secs;
  return r;
}

struct Sizes {
  int64_t occlusion_window, occlusion_stride, rise_masks, ig_steps;
  bool full_scorecam;  // Score-CAM on every channel (else Faster Score-CAM's top 10%)
};

struct BenchModel {
  std::string label, path;
  std::vector<int64_t> shape;  // one input, [1, C, H, W]
  Sizes sizes;
};

// The models found: the traced ResNets in --models, the demo model.
std::vector<BenchModel> bench_models(const Options& o) {
  std::vector<BenchModel> m;
  // ResNet-50: Faster Score-CAM (205 of layer4's 2048 channels) keeps the run short.
  for (const char* name : {"resnet50", "resnet18"})
    if (fs::exists(fs::path(o.models) / (std::string(name) + ".pt")))
      m.push_back({name, (fs::path(o.models) / (std::string(name) + ".pt")).string(), {1, 3, 224, 224},
                   {32, 32, 256, 32, false}});
  if (fs::exists(o.demo)) m.push_back({"demo", o.demo, {1, 3, 96, 96}, {16, 8, 1000, 32, true}});
  return m;
}

// Forward-only methods batch as many rows as the default 1 GiB budget allows
// (salient's forward chunks); the eager baselines use the same batch size.
int64_t forward_batch(const salient::Model& model, const std::vector<int64_t>& shape) {
  return salient::forward_chunk_rows(model, at::empty(shape), int64_t(1) << 30);
}

// One batch (the forward-only rows' size) through the eager module and through the frozen
// graph (Model::infer), fastest of `reps` interleaved runs each, in ms.
struct ForwardCosts {
  std::string model;
  int64_t batch = 0;
  double eager_ms = 0, frozen_ms = 0;
};

ForwardCosts forward_costs(const BenchModel& bm, int reps) {
  salient::Model model = salient::Model::load(bm.path);
  torch::jit::Module raw = torch::jit::load(bm.path);
  raw.eval();
  ForwardCosts c;
  c.model = bm.label;
  c.batch = forward_batch(model, bm.shape);
  at::manual_seed(0);
  at::Tensor x = at::randn({c.batch, bm.shape[1], bm.shape[2], bm.shape[3]});
  at::NoGradGuard g;
  c.eager_ms = c.frozen_ms = 1e300;
  for (int i = 0; i < reps + 2; ++i) {  // the first two runs warm up
    const double e = seconds([&] { raw.forward({x * 0.5}); }) * 1000;
    const double f = seconds([&] { model.infer(x * 0.5); }) * 1000;
    if (i >= 2) c.eager_ms = std::min(c.eager_ms, e), c.frozen_ms = std::min(c.frozen_ms, f);
  }
  return c;
}

int alloc_child(const Options& o) {
  for (const BenchModel& bm : bench_models(o)) {
    ForwardCosts c = forward_costs(bm, 5);
    std::cout << c.model << " " << c.batch << " " << c.eager_ms << " " << c.frozen_ms << std::endl;
  }
  return 0;
}

std::vector<ForwardCosts> forward_costs_in_child(const Options& o) {
  std::string cmd = "'" + o.self + "' --alloc-child --default-malloc --models '" + o.models + "' --demo '" + o.demo +
                    "' --threads " + std::to_string(o.threads);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd);
  std::vector<ForwardCosts> v;
  char name[64];
  long long batch = 0;
  double e = 0, f = 0;
  while (std::fscanf(p, "%63s %lld %lf %lf", name, &batch, &e, &f) == 4) v.push_back({name, batch, e, f});
  if (pclose(p) != 0) throw std::runtime_error("forward costs under glibc's defaults failed: " + cmd);
  return v;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string first_line_of(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  char buf[512] = {0};
  std::string line = fgets(buf, sizeof(buf), p) ? buf : "";
  pclose(p);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

std::string machine_description() {
  std::ostringstream m;
  std::string os = first_line_of("sh -c '. /etc/os-release 2>/dev/null && echo $PRETTY_NAME'");
  const int64_t mem_kib = [] {
    std::ifstream f("/proc/meminfo");
    std::string key;
    int64_t v = 0;
    f >> key >> v;
    return v;
  }();
  m << cpu_name() << ", " << std::thread::hardware_concurrency() << " CPUs, " << mem_kib / (1024 * 1024) << " GiB RAM, "
    << (os.empty() ? "Linux" : os) << ", " << "GCC " << __GNUC__ << "." << __GNUC_MINOR__ << ", Release build, LibTorch "
    << TORCH_VERSION << " (CPU), intra-op threads " << at::get_num_threads() << " for method and baseline alike, "
    << (g_retained ? "glibc malloc keeping freed memory (salient::retain_freed_memory(), as the CLI runs)"
                   : "glibc malloc with its defaults")
    << (g_infer_runner.empty() ? "" : ", Model::infer runner " + g_infer_runner);
  return m.str();
}

// Runs a command; its wall time and peak RSS. The peak is the child's VmHWM after it has
// exec'd into `name`, polled until it exits: rusage's maxrss would also count the pages of
// this (large) process that the fork shares before the exec.
struct ProcessCost {
  double seconds = 0;
  int64_t peak_kib = 0;
  int code = -1;
};
ProcessCost run_process(const std::string& cmd, const std::string& name = "salient") {
  ProcessCost c;
  auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  const std::string proc = "/proc/" + std::to_string(pid) + "/status";
  for (;;) {
    {
      std::ifstream f(proc);
      std::string line, comm;
      int64_t hwm = -1;
      while (std::getline(f, line)) {
        if (line.rfind("Name:", 0) == 0) comm = line.substr(line.find_first_not_of(" \t", 5));
        if (line.rfind("VmHWM:", 0) == 0) hwm = std::stoll(line.substr(6));
      }
      if (comm == name && hwm > c.peak_kib) c.peak_kib = hwm;
    }
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  c.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  c.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return c;
}

// The throughput rows' image names: 00000.png, 00001.png, ...
std::string image_name(int i) {
  char name[32];
  std::snprintf(name, sizeof(name), "%05d.png", i);
  return name;
}

// Images for the throughput rows: squares on noise, as PNG.
void write_images(const fs::path& dir, int count, int size) {
  fs::create_directories(dir);
  cv::RNG rng(7);
  for (int i = 0; i < count; ++i) {
    cv::Mat m(size, size, CV_8UC3);
    rng.fill(m, cv::RNG::UNIFORM, 0, 80);
    const int s = size / 3, x = rng.uniform(0, size - s), y = rng.uniform(0, size - s);
    m(cv::Rect(x, y, s, s)).setTo(cv::Scalar(220, 210, 200));
    const std::string name = image_name(i);
    cv::imwrite((dir / name).string(), m);
  }
}

struct Throughput {
  std::string model;
  int images = 0, single_images = 0;
  double batch_s = 0, single_s = 0, library_s = 0;
};

// Grad-CAM over a folder: `salient batch` against one `salient explain` process per
// image (what a shell loop does) and against the library called one image at a time.
Throughput batch_throughput(const Options& o, const std::string& label, const std::string& model_path, int size,
                            const std::string& pre, int images, int single_images, const fs::path& work) {
  Throughput t{label, images, single_images};
  const fs::path dir = work / (label + "_images");
  write_images(dir, images, size);
  const std::string common = " --model '" + model_path + "' --methods gradcam " + pre + " --threads " + std::to_string(o.threads);
  fs::remove_all(work / (label + "_batch"));
  ProcessCost b = run_process("'" + o.cli + "' batch --images '" + dir.string() + "' --out '" +
                              (work / (label + "_batch")).string() + "' --quiet" + common + " > /dev/null 2>&1");
  if (b.code != 0) throw std::runtime_error("salient batch failed on " + dir.string());
  t.batch_s = b.seconds;
  double single = 0;
  for (int i = 0; i < single_images; ++i) {
    const std::string name = image_name(i);
    ProcessCost e = run_process("'" + o.cli + "' explain --image '" + (dir / name).string() + "' --out '" +
                                (work / (label + "_single")).string() + "'" + common + " > /dev/null 2>&1");
    if (e.code != 0) throw std::runtime_error("salient explain failed");
    single += e.seconds;
  }
  t.single_s = single;
  // The library, one image per call (model loaded once), over all the images: what
  // batching and pipelining gain, less what writing every output costs.
  salient::Model model = salient::Model::load(model_path);
  salient::io::Preprocess p = salient::io::Preprocess::preset(pre.find("none") != std::string::npos ? "none" : "imagenet");
  t.library_s = seconds([&] {
    for (int i = 0; i < images; ++i) {
      const std::string name = image_name(i);
      auto prepared = salient::io::prepare(salient::io::read_image((dir / name).string()), p, 3);
      salient::gradcam(model, prepared.tensor);
    }
  });
  std::cout << label << " batch: " << images / t.batch_s << " img/s; explain per image: " << single_images / t.single_s
            << " img/s; library per image: " << images / t.library_s << " img/s\n";
  return t;
}

// The plain way to use LibTorch on this model, as a user would: torch::jit::load, eval.
struct Raw {
  torch::jit::Module m;
  explicit Raw(const std::string& path) : m(torch::jit::load(path)) { m.eval(); }
  explicit Raw(torch::jit::Module module) : m(std::move(module)) { m.eval(); }
  at::Tensor forward(const at::Tensor& x) { return m.forward({x}).toTensor(); }
};

// Plain eager forwards without autograd, in batches of `batch`: what a forward-only
// method would cost run by hand on the model as it is. Each batch is a fresh tensor
// derived from x, as a masked input would be.
void eager_forwards(Raw& raw, const at::Tensor& x, int64_t count, int64_t batch) {
  at::NoGradGuard g;
  for (int64_t r0 = 0; r0 < count; r0 += batch) {
    const int64_t b = std::min(batch, count - r0);
    raw.forward(x.expand({b, -1, -1, -1}) * 0.5);
  }
}

// Forward with autograd from the input and the gradient of the target logit, on rows.
at::Tensor raw_input_gradient(Raw& raw, const at::Tensor& rows, int64_t target) {
  at::Tensor xi = rows.clone().requires_grad_(true);
  at::Tensor out = raw.forward(xi);
  return torch::autograd::grad({out.select(1, target).sum()}, {xi})[0];
}

std::vector<Row> bench_model(const std::string& label, const std::string& path, const std::vector<int64_t>& shape,
                             int repeats, const Sizes& z) {
  std::vector<Row> rows;
  salient::Model model = salient::Model::load(path);
  g_infer_runner = model.infer_runner();
  Raw raw(path);
  at::manual_seed(0);
  at::Tensor x = at::randn(shape);
  const int64_t target = 3;
  auto t = salient::Target::index(target);
  const int64_t h = shape[2], w = shape[3];
  const int64_t fwd_batch = forward_batch(model, shape);
  const std::string layer = model.default_cam_layer({shape[1], h, w});
  const at::Tensor act = model.forward(x, {layer}).taps[0];
  const int64_t channels = act.size(1), positions = act.size(2) * act.size(3);
  auto forward_no_grad = [&] {
    at::NoGradGuard g;
    raw.forward(x);
  };
  auto forward_and_grad = [&] { raw_input_gradient(raw, x, target); };

  rows.push_back(compare(label, "gradcam", "1 forward (no grad)", 1.15, [&] { salient::gradcam(model, x, t); },
                         forward_no_grad, repeats));
  for (const char* cam : {"gradcam_plusplus", "xgradcam", "hirescam", "layercam", "gradcam_elementwise",
                          "eigengradcam", "eigencam"})
    rows.push_back(compare(label, cam, "1 forward (no grad)", 1.15, [&] { salient::explain(model, x, cam, t); },
                           forward_no_grad, repeats));
  rows.push_back(compare(label, "vanilla", "1 forward + input gradient", 1.0,
                         [&] { salient::vanilla_gradient(model, x, t); }, forward_and_grad, repeats));
  for (const char* m : {"input_x_gradient", "guided_backprop", "deconvnet", "fullgrad"})
    rows.push_back(compare(label, m, "1 forward + input gradient", 1.0, [&] { salient::explain(model, x, m, t); },
                           forward_and_grad, repeats));
  rows.push_back(compare(
      label, "guided_gradcam", "1 forward + 2 input gradients", 1.0,
      [&] { salient::guided_gradcam(model, x, t); },
      [&] {
        at::Tensor xi = x.clone().requires_grad_(true);
        at::Tensor s = raw.forward(xi).select(1, target).sum();
        torch::autograd::grad({s}, {xi}, {}, /*retain_graph=*/true);
        torch::autograd::grad({s}, {xi});
      },
      repeats));
  rows.push_back(compare(
      label, "vanilla+gradcam+guided_gradcam", "the 3 methods called one by one", 1.0,
      [&] { salient::explain(model, x, {"vanilla", "gradcam", "guided_gradcam"}, t); },
      [&] {
        salient::vanilla_gradient(model, x, t);
        salient::gradcam(model, x, t);
        salient::guided_gradcam(model, x, t);
      },
      repeats));
  const int64_t steps = z.ig_steps;
  rows.push_back(compare(
      label, "integrated_gradients-" + std::to_string(steps),
      std::to_string(steps) + " forward + input gradient, one batch; 2 forwards", 1.0,
      [&] { salient::integrated_gradients(model, x, t, salient::IntegratedGradientsOptions().n_steps(steps)); },
      [&] {
        at::Tensor alphas = at::linspace(0, 1, steps).view({-1, 1, 1, 1});
        at::Tensor g = raw_input_gradient(raw, alphas * x, target);
        at::Tensor map = g.mean(0, true) * x;
        // The convergence delta's endpoints F(x) and F(0), which salient always returns
        // (Captum's return_convergence_delta=True runs the same two forwards).
        at::NoGradGuard no_grad;
        at::Tensor ends = raw.forward(at::cat({x, at::zeros_like(x)})).select(1, target);
        (map.sum() - (ends[0] - ends[1])).item<double>();
      },
      std::max(3, repeats / 3)));
  const int64_t n = 16;
  rows.push_back(compare(
      label, "smoothgrad-16", "16 noisy copies, one batch, fwd+grad", 1.0,
      [&] { salient::smoothgrad(model, x, t, salient::SmoothGradOptions().n_samples(n)); },
      [&] {
        at::Tensor flat = x.flatten();
        double sd = 0.15 * (flat.max() - flat.min()).item<double>();
        at::Tensor g = raw_input_gradient(raw, x.repeat({n, 1, 1, 1}) + at::randn({n, shape[1], h, w}) * sd, target);
        g.mean(0, true);
      },
      repeats));

  // Forward-only methods against plain eager forwards of as many rows.
  const int few = std::max(3, repeats / 3);
  // The frozen graph alone on one batch: the floor of the forward-only rows in float32 on
  // this CPU (what they add above it is their own work: masks, blurs, scores).
  rows.push_back(compare(
      label, "frozen forward alone", std::to_string(fwd_batch) + " eager forwards, one batch", 0,
      [&] { model.infer(x.expand({fwd_batch, -1, -1, -1}) * 0.5); },
      [&] { eager_forwards(raw, x, fwd_batch, fwd_batch); }, few));
  auto windows = [](int64_t d, int64_t k, int64_t s) { return (d - k + s - 1) / s + 1; };
  const int64_t occ = windows(h, z.occlusion_window, z.occlusion_stride) * windows(w, z.occlusion_window, z.occlusion_stride);
  rows.push_back(compare(
      label, "occlusion-" + std::to_string(z.occlusion_window) + "/" + std::to_string(z.occlusion_stride),
      std::to_string(1 + occ) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] {
        salient::occlusion(model, x, t,
                           salient::OcclusionOptions().window(z.occlusion_window).stride(z.occlusion_stride));
      },
      [&] { eager_forwards(raw, x, 1 + occ, fwd_batch); }, few));
  rows.push_back(compare(
      label, "rise-" + std::to_string(z.rise_masks),
      std::to_string(z.rise_masks) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] { salient::rise(model, x, t, salient::RiseOptions().n_masks(z.rise_masks)); },
      [&] { eager_forwards(raw, x, z.rise_masks, fwd_batch); }, few));
  const int64_t k = z.full_scorecam ? channels : (channels + 9) / 10;
  rows.push_back(compare(
      label, z.full_scorecam ? "scorecam" : "faster_scorecam-10%",
      std::to_string(1 + k) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] {
        if (z.full_scorecam)
          salient::scorecam(model, x, t);
        else
          salient::faster_scorecam(model, x, t);
      },
      [&] { eager_forwards(raw, x, 1 + k, fwd_batch); }, few));
  // Ablation-CAM and ReciproCAM re-run only the layers after their layer; the baseline is
  // the full forwards a hook-based tool runs (pytorch-grad-cam's Ablation-CAM).
  // Above 256 rows the baseline is timed on 256 and scaled (eager forwards cost the same
  // per batch), which keeps ResNet-50's 2049 forwards out of the run time.
  const int64_t timed = std::min<int64_t>(1 + channels, 256);
  Row ab = compare(
      label, "ablationcam",
      std::to_string(1 + channels) + " eager forwards, batches of " + std::to_string(fwd_batch) +
          (timed < 1 + channels ? " (timed on " + std::to_string(timed) + ", scaled)" : ""),
      0.6, [&] { salient::ablationcam(model, x, t); }, [&] { eager_forwards(raw, x, timed, fwd_batch); }, few);
  ab.scale_baseline(static_cast<double>(1 + channels) / static_cast<double>(timed));
  if (ab.method_ms >= 0)
    std::cout << "  ablationcam baseline scaled to " << ab.baseline_ms << " ms, ratio " << ab.ratio() << "\n";
  rows.push_back(ab);
  rows.push_back(compare(
      label, "reciprocam", std::to_string(1 + positions) + " eager forwards, batches of " + std::to_string(fwd_batch),
      0.6, [&] { salient::reciprocam(model, x, t); },
      [&] { eager_forwards(raw, x, 1 + positions, fwd_batch); }, few));

  // Metrics: forward-only on the frozen graph, against as many plain eager forwards.
  const at::Tensor gmap = salient::gradcam(model, x, t).map;
  auto del_o = salient::PerturbationCurveOptions();
  const int64_t curve_rows = salient::deletion(model, x, gmap, t, del_o).forward_samples;
  rows.push_back(compare(
      label, "metric deletion-1%", std::to_string(curve_rows) + " eager forwards, batches of " + std::to_string(fwd_batch),
      0.6, [&] { salient::deletion(model, x, gmap, t, del_o); },
      [&] { eager_forwards(raw, x, curve_rows, fwd_batch); }, few));
  rows.push_back(compare(
      label, "metric insertion-1%", std::to_string(curve_rows) + " eager forwards, batches of " + std::to_string(fwd_batch),
      0.6, [&] { salient::insertion(model, x, gmap, t, del_o); },
      [&] { eager_forwards(raw, x, curve_rows, fwd_batch); }, few));
  // ROAD's baseline is its 18 forwards alone: the imputation (a sparse solve per removed
  // set) is work the forwards do not do, so this row shows what it adds.
  rows.push_back(compare(
      label, "metric road", "18 eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] { salient::road(model, x, gmap, t); }, [&] { eager_forwards(raw, x, 18, fwd_batch); }, few));
  {
    // Its imputation alone (the same 18 removed sets, MoRF and LeRF at 10%..90%): the part
    // of the road row that is not forwards.
    const int64_t h = x.size(2), w = x.size(3), hw = h * w;
    const at::Tensor rank = salient::pixel_saliency(gmap).reshape({hw}).argsort(/*stable=*/true, /*dim=*/0,
                                                                                 /*descending=*/true).argsort().view({h, w});
    std::vector<at::Tensor> removed;
    for (int order = 0; order < 2; ++order)
      for (int k = 1; k <= 9; ++k) {
        const int64_t m = std::llround(0.1 * k * static_cast<double>(hw));
        removed.push_back(order == 0 ? rank < m : rank >= hw - m);
      }
    const at::Tensor sets = at::stack(removed), rows18 = x.expand({18, x.size(1), h, w}).contiguous();
    rows.push_back(compare(
        label, "metric road, imputation alone", "18 eager forwards, batches of " + std::to_string(fwd_batch), 0,
        [&] { salient::noisy_linear_imputation(rows18, sets); }, [&] { eager_forwards(raw, x, 18, fwd_batch); }, few));
  }
  // Explanation-based metrics with vanilla gradients: sanity re-explains on a randomised
  // copy per block, max-sensitivity on 10 perturbed inputs.
  salient::ExplainFn vanilla_fn = [](const salient::Model& m, const at::Tensor& xx, const salient::Target& tt) {
    return salient::vanilla_gradient(m, xx, tt);
  };
  const int64_t blocks = static_cast<int64_t>(model.parameter_blocks().size());
  rows.push_back(compare(
      label, "metric sanity-vanilla",
      std::to_string(blocks) + " module clones + " + std::to_string(blocks + 1) + " forward + input gradient", 1.0,
      [&] { salient::cascading_randomization(model, x, vanilla_fn, t); },
      [&] {
        raw_input_gradient(raw, x, target);
        for (int64_t b = 0; b < blocks; ++b) {
          Raw copy{raw.m.clone()};
          raw_input_gradient(copy, x, target);
        }
      },
      few));
  rows.push_back(compare(
      label, "metric sensitivity-vanilla", "11 forward + input gradient", 1.0,
      [&] { salient::max_sensitivity(model, x, vanilla_fn, t); },
      [&] {
        for (int i = 0; i < 11; ++i) raw_input_gradient(raw, x + 0.01 * i, target);
      },
      few));
  rows.push_back(compare(
      label, "metric infidelity-10", "11 eager forwards, one batch", 0.6,
      [&] { salient::infidelity(model, x, gmap, t); }, [&] { eager_forwards(raw, x, 11, 11); }, few));

  // The same forward-only work on the bf16 frozen copy (opt-in: scores differ from
  // float32's in about the third digit), against the same float32 eager forwards.
  const auto bf16 = salient::Precision::BFloat16;
  rows.push_back(compare(
      label, "occlusion-" + std::to_string(z.occlusion_window) + "/" + std::to_string(z.occlusion_stride) + " bf16",
      std::to_string(1 + occ) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] {
        salient::occlusion(
            model, x, t,
            salient::OcclusionOptions().window(z.occlusion_window).stride(z.occlusion_stride).precision(bf16));
      },
      [&] { eager_forwards(raw, x, 1 + occ, fwd_batch); }, few));
  auto del_bf16 = salient::PerturbationCurveOptions().precision(bf16);
  rows.push_back(compare(
      label, "metric deletion-1% bf16",
      std::to_string(curve_rows) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] { salient::deletion(model, x, gmap, t, del_bf16); },
      [&] { eager_forwards(raw, x, curve_rows, fwd_batch); }, few));
  rows.push_back(compare(
      label, "metric insertion-1% bf16",
      std::to_string(curve_rows) + " eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] { salient::insertion(model, x, gmap, t, del_bf16); },
      [&] { eager_forwards(raw, x, curve_rows, fwd_batch); }, few));
  rows.push_back(compare(
      label, "metric road bf16", "18 eager forwards, batches of " + std::to_string(fwd_batch), 0.6,
      [&] { salient::road(model, x, gmap, t, salient::RoadOptions().precision(bf16)); },
      [&] { eager_forwards(raw, x, 18, fwd_batch); }, few));
  rows.push_back(compare(
      label, "metric infidelity-10 bf16", "11 eager forwards, one batch", 0.6,
      [&] { salient::infidelity(model, x, gmap, t, salient::InfidelityOptions().precision(bf16)); },
      [&] { eager_forwards(raw, x, 11, 11); }, few));
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.self = argv[0];
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--models") o.models = next();
    else if (a == "--demo") o.demo = next();
    else if (a == "--markdown") o.markdown = next();
    else if (a == "--repeats") o.repeats = std::stoi(next());
    else if (a == "--rss-samples") o.rss_samples = std::stoll(next());
    else if (a == "--skip-rss") o.skip_rss = true;
    else if (a == "--rss-child") o.rss_child = true;
    else if (a == "--rss-method") o.rss_method = next();
    else if (a == "--cli") o.cli = next();
    else if (a == "--skip-batch") o.skip_batch = true;
    else if (a == "--default-malloc") o.default_malloc = true;
    else if (a == "--alloc-child") o.alloc_child = true;
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--only") {
      std::stringstream ss(next());
      for (std::string item; std::getline(ss, item, ',');) g_only.push_back(item);
    }
    else {
      std::cerr << "usage: salient_bench [--models DIR] [--demo MODEL] [--markdown FILE] [--repeats K] "
                   "[--rss-samples N] [--skip-rss] [--cli SALIENT] [--skip-batch] [--threads N] [--only ROW,...] "
                   "[--default-malloc]\n";
      return 2;
    }
  }
  if (o.threads > 0) at::set_num_threads(o.threads);
  // Method and baseline alike run with the allocator setting the CLI applies.
  g_retained = !o.default_malloc && salient::retain_freed_memory();
  try {
    if (o.rss_child) return rss_child(o);
    if (o.alloc_child) return alloc_child(o);
    std::vector<Row> rows;
    auto add = [&](const std::vector<Row>& r) { rows.insert(rows.end(), r.begin(), r.end()); };
    const std::vector<BenchModel> models = bench_models(o);
    for (const BenchModel& bm : models) add(bench_model(bm.label, bm.path, bm.shape, o.repeats, bm.sizes));

    // Peak memory of long SmoothGrad, Integrated Gradients, deletion and RISE runs with the default 1 GiB
    // budget, each in a fresh process (this one's heap holds the timing runs' memory).
    std::vector<std::pair<std::string, RssResult>> rss;
    if (!o.skip_rss)
      for (const char* m : {"smoothgrad", "integrated_gradients", "deletion", "rise"}) {
        rss.emplace_back(m, rss_in_child(o, m));
        const RssResult& r = rss.back().second;
        std::cout << m << "-" << o.rss_samples << " on resnet50: peak RSS " << r.peak_kib / 1024
                  << " MiB (after loading the model " << r.before_kib / 1024 << " MiB), chunk " << r.chunk << " samples, "
                  << r.seconds << " s\n";
      }

    // One batch of eager and frozen forwards with this process's allocator setting and, in a
    // fresh process, with glibc's defaults: what salient::retain_freed_memory() is worth here.
    std::vector<std::pair<ForwardCosts, ForwardCosts>> alloc;  // (glibc defaults, retained)
    if (g_retained && selected("allocator")) {
      // The child measures the same models in the same order.
      const std::vector<ForwardCosts> defaults = forward_costs_in_child(o);
      if (defaults.size() != models.size()) throw std::runtime_error("forward costs under glibc's defaults: wrong count");
      for (size_t i = 0; i < models.size(); ++i) {
        const ForwardCosts& d = defaults[i];
        alloc.emplace_back(d, forward_costs(models[i], 5));
        const ForwardCosts& r = alloc.back().second;
        std::cout << "allocator " << d.model << " batch " << d.batch << ": eager " << d.eager_ms << " -> " << r.eager_ms
                  << " ms, frozen " << d.frozen_ms << " -> " << r.frozen_ms << " ms (glibc defaults -> retained)"
                  << std::endl;
      }
    }

    // Batch throughput and memory over long runs, through the command line.
    std::vector<Throughput> tput;
    std::vector<std::pair<int, ProcessCost>> flat;
    const fs::path work = fs::temp_directory_path() / ("salient_bench_" + std::to_string(::getpid()));
    if (!o.skip_batch && !o.cli.empty()) {
      if (fs::exists(o.demo)) tput.push_back(batch_throughput(o, "demo", o.demo, 96, "--preset none", 400, 40, work));
      if (fs::exists(fs::path(o.models) / "resnet18.pt"))
        tput.push_back(batch_throughput(o, "resnet18", (fs::path(o.models) / "resnet18.pt").string(), 224,
                                        "--preset imagenet", 100, 20, work));
      if (fs::exists(o.demo)) {
        write_images(work / "flat_images", 2000, 96);
        for (int n : {200, 2000}) {
          fs::create_directories(work / ("flat_" + std::to_string(n)));
          for (int i = 0; i < n; ++i) {
            const std::string name = image_name(i);
            fs::create_symlink(work / "flat_images" / name, work / ("flat_" + std::to_string(n)) / name);
          }
          ProcessCost c = run_process("'" + o.cli + "' batch --model '" + o.demo + "' --images '" +
                                      (work / ("flat_" + std::to_string(n))).string() + "' --out '" +
                                      (work / ("flat_out_" + std::to_string(n))).string() +
                                      "' --methods gradcam,vanilla --preset none --quiet > /dev/null 2>&1");
          if (c.code != 0) throw std::runtime_error("salient batch failed in the memory run");
          flat.emplace_back(n, c);
          std::cout << "batch of " << n << " demo images (gradcam, vanilla): peak RSS " << c.peak_kib / 1024 << " MiB, "
                    << c.seconds << " s\n";
        }
      }
      fs::remove_all(work);
    }

    if (!o.markdown.empty()) {
      std::ostringstream md;
      md << "# Benchmarks\n\n"
         << "Written by `scripts/dev bench` (bench/bench.cpp). Each row times a method or metric and the raw LibTorch "
            "passes it\nminimally needs, interleaved in the same run after warm-up (method, baseline, method, "
            "baseline, ...; at least "
         << o.repeats
         << " pairs, more for\nsmall models). The baseline is the plain way to do it by hand: `torch::jit::load`, "
            "`eval()`,\n`forward`, `torch::autograd::grad`. \"method ms\" and \"baseline ms\" are the fastest run "
            "of each (other load on the machine only adds time) and \"ratio\" is their quotient. \"pairs\" is the "
            "median of the per-pair ratios with their quartiles: a pair runs back to back, so slow drift of this "
            "shared machine (the same baseline's fastest run moves by up to 30% between rows of one run) cancels in "
            "it. The verdict compares the quartiles with the goal: \"met\" when the upper quartile is within it, "
            "\"unmet\" when the lower quartile is above it, \"within noise\" otherwise.\n\n"
         << "Machine: " << machine_description()
         << ". Batch of 1 image (ResNet-50 and ResNet-18 at 224x224, random weights, traced by bench/trace_models.py; "
            "the demo model at 96x96). CUDA: docs/GPU.md (scripts/device-check, on a machine with a GPU).\n\n"
         << "Reading:\n\n"
            "- Gradient CAMs record autograd only after their layer and run the backward to that layer only; from a "
            "layer's second call on, the layers before it run a frozen copy on the oneDNN plan of the "
            "forward-only rows (docs/methods.md, Frozen prefix), so they cost less than one eager forward. Eigen-CAM "
            "runs no backward; the top "
            "eigenvector of the smaller Gram matrix of the layer's output (Lanczos, about ten matrix-vector "
            "products) is what it adds.\n"
            "- Every method whose backward reaches the input (vanilla, input x gradient, guided backprop, deconvnet, "
            "FullGrad, Guided Grad-CAM, the shared row, and SmoothGrad and max-sensitivity over them) runs a frozen "
            "copy of the model with BatchNorm folded into the convolutions (Autograd::Input, built once per set of "
            "extra outputs: the CAM layer, the bias layers, the ReLUs), so its forward and backward skip every "
            "BatchNorm the baseline runs. Integrated Gradients runs its steps from alpha 0.1 on that copy and "
            "the ones nearer the baseline on the model's own graph, for Captum parity (docs/methods.md, BatchNorm "
            "folding). Guided backprop and deconvnet add one hook per ReLU. FullGrad "
            "also needs the gradient at every bias layer (the backward computes them anyway): a gradient hook "
            "turns each into its normalised term as the backward produces it, in one read; the terms are what it "
            "adds to the passes.\n"
            "- Guided Grad-CAM and the vanilla + Grad-CAM + Guided Grad-CAM row share one forward (see "
            "docs/methods.md, Shared passes); their baselines do more work than the minimum, so these rows show the "
            "saving.\n"
            "- Integrated Gradients and SmoothGrad run their rows in chunks sized from the 1 GiB memory budget and "
            "evened out (26 rows at most 25 a chunk as 13 + 13); the baseline pushes all rows through one batch. "
            "Integrated Gradients always returns its convergence delta, so its baseline also runs the delta's two "
            "forwards, F(x) and F(baseline), as Captum does when asked for it (and as docs/GPU.md's check "
            "does).\n"
            "- Forward-only methods run on the frozen graph (torch::jit::freeze, BatchNorm folded into the "
            "convolutions) through salient's oneDNN plan (Model::infer_runner() \"onednn\"; docs/methods.md, "
            "oneDNN plan): Winograd for 3x3 stride-1 convolutions, each ReLU and residual sum fused into the "
            "convolution before it, one blocked layout throughout. They run in batches from the memory budget "
            "(Model::forward_bytes_per_sample: the values a forward holds at once, not a backward's), evened out; "
            "the baseline runs plain eager forwards in batches of the largest size, the last one "
            "holding the rest. The row \"frozen forward alone\" times one such batch through Model::infer against "
            "one eager batch: about the floor of these rows in float32 on this CPU (measured at another moment, "
            "so a row can land a little below it). It is lowest where 3x3 convolutions dominate (ResNet-18, the "
            "demo) and highest on ResNet-50, whose 1x1 convolutions Winograd does not apply to. LibTorch's own "
            "optimize_for_inference graph (SALIENT_ONEDNN=0) took 0.79 / 0.83 / 0.53 (ResNet-50 / ResNet-18 / "
            "demo) on this CPU, and 0.68-0.73 on the ResNets on an earlier Intel Xeon. Ablation-CAM and "
            "ReciproCAM re-run only the layers after their layer; their baseline is the full forwards a hook-based "
            "tool runs (pytorch-grad-cam's Ablation-CAM), so they land far below it.\n"
            "- Metrics run forward-only on the plan in batches, like the forward-only methods. ROAD's rows "
            "also include its imputation (a sparse solve per removed set, its channels sharing every pass, by "
            "multigrid-preconditioned conjugate gradients on float planes, the sets solved in parallel), work its 18 eager "
            "forwards do not do; the row \"metric road, imputation alone\" times that solve by itself, so the road "
            "row minus it is what its forwards cost. Infidelity's 11 forwards fit one batch.\n"
            "- Rows marked bf16 run the same work with precision bf16 (opt-in: Model::infer's second frozen copy, "
            "bf16 weights in channels-last layout, input cast to bf16, float32 out) against the same float32 eager "
            "forwards. "
         << (salient::native_bf16()
                 ? "This CPU computes bf16 natively (AVX512-BF16 or AMX), so these rows run faster than float32's. "
                 : "This CPU has no native bf16 (no AVX512-BF16 or AMX: salient::native_bf16() is false), so oneDNN "
                   "emulates it and these rows run slower than float32's; on such CPUs keep float32. ")
         << "Scores differ from float32's in about the third digit (docs/methods.md, Precision).\n"
            "- The sanity check re-explains on a randomised copy per block. The copy shares every weight it does "
            "not re-draw and the compiled graphs, so it costs the draws of one block; the baseline deep-copies the "
            "module per block but draws nothing. Max-sensitivity explains its 10 perturbed copies in one batch "
            "(Captum's max_examples_per_batch); the baseline runs them one by one.\n"
            "- On the small demo model a fixed cost per call (input checks, target scores, upsampling; about 0.3 ms "
            "on the Intel Xeon) shows in the ratios.\n\n"
         << "| model | method | method ms | baseline | baseline ms | ratio | pairs: median [quartiles] | goal | verdict |\n"
         << "|---|---|---:|---|---:|---:|---:|---:|---|\n";
      for (const auto& r : rows)
        if (r.method_ms >= 0)
          md << "| " << r.model << " | " << r.what << " | " << std::fixed << std::setprecision(1) << r.method_ms
             << " | " << r.baseline << " | " << r.baseline_ms << " | " << std::setprecision(3) << r.ratio() << " | "
             << r.pair_median << " [" << r.pair_q1 << ", " << r.pair_q3 << "] | "
             << (r.goal > 0 ? "<= " + fixed2(r.goal) : std::string("-")) << " | " << r.verdict() << " |\n";
      if (!rss.empty()) {
        md << "\n## Memory\n\nLong runs on ResNet-50 (one 224x224 image), default memory budget 1 GiB, each measured in a "
              "fresh process. Rows run in chunks sized from the budget.\n\n"
           << "| method | samples | chunk | RSS after loading (MiB) | peak RSS (MiB) | peak minus before (MiB) | one batch "
              "would need (MiB, estimate) | run time (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for (const auto& kv : rss) {
          const RssResult& r = kv.second;
          md << "| " << kv.first << " | " << o.rss_samples << " | " << r.chunk << " | " << r.before_kib / 1024 << " | "
             << r.peak_kib / 1024 << " | " << (r.peak_kib - r.before_kib) / 1024 << " | "
             << r.per_sample * o.rss_samples / (1024 * 1024) << " | " << std::fixed << std::setprecision(1) << r.seconds
             << " |\n";
        }
        const bool inside = std::all_of(rss.begin(), rss.end(), [](const auto& kv) {
          return kv.second.peak_kib - kv.second.before_kib <= 1024 * 1024;
        });
        md << "\n" << (inside ? "All stay" : "Not all stay") << " inside the 1 GiB budget (peak minus before). "
           << "Deletion's samples are its steps (one forward-only row each, plus the clean one); RISE's are its masks, "
              "which at 224x224 take 196 KiB each: past an eighth of the budget they are made chunk by chunk rather "
              "than held. The per-sample estimate (every intermediate tensor of a functional copy of the graph, plus two of "
              "the largest for the backward's gradients) is an upper bound; the model's in-place ops are kept, so a run "
              "holds less per sample than estimated. Deletion's and RISE's rows run forward-only, so their estimate is "
              "Model::forward_bytes_per_sample (the most bytes alive at once over the graph's nodes, doubled, plus two "
              "copies of the input; docs/methods.md).\n";
      }
      if (!tput.empty()) {
        md << "\n## Batch throughput\n\nGrad-CAM over a folder of PNG images: `salient batch` (decoding on worker "
              "threads, batches from the memory budget, every output written: input, overlay, map, panel, record) "
              "against one `salient explain` process per image (a shell loop, same outputs) and against the library "
              "called one image at a time with the model loaded once (no files written). Images/s, higher is "
              "better.\n\n| model | images | salient batch | explain per image | ratio | library per image | ratio |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n";
        for (const auto& t : tput) {
          const double b = t.images / t.batch_s, e = t.single_images / t.single_s, l = t.images / t.library_s;
          md << "| " << t.model << " | " << t.images << " | " << std::fixed << std::setprecision(1) << b << " | " << e << " ("
             << t.single_images << " images) | " << std::setprecision(1) << b / e << "x | " << l << " | "
             << std::setprecision(2) << b / l << "x |\n";
        }
      }
      if (!flat.empty()) {
        md << "\n## Memory over long batch runs\n\n`salient batch` with Grad-CAM and vanilla gradients on the demo "
              "model, peak RSS of the whole process:\n\n| images | peak RSS (MiB) | run time (s) |\n|---:|---:|---:|\n";
        for (const auto& f : flat)
          md << "| " << f.first << " | " << f.second.peak_kib / 1024 << " | " << std::fixed << std::setprecision(1)
             << f.second.seconds << " |\n";
      }
      if (!alloc.empty()) {
        md << "\n## Allocator\n\nLibTorch frees a forward's activations and allocates them again on the next pass. "
              "With glibc's defaults every block above its mmap threshold goes back to the system on free and is "
              "faulted in again, page by page, on the next pass; salient::retain_freed_memory() (called by the CLI "
              "and by this bench for method and baseline alike) keeps freed memory in the heap instead. One batch of "
              "the forward-only rows' size, fastest of 5 runs, the glibc defaults measured in a fresh process:\n\n"
              "| model | batch | eager forward, glibc defaults (ms) | eager, memory kept (ms) | speed-up | frozen graph, "
              "glibc defaults (ms) | frozen, memory kept (ms) | speed-up |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for (const auto& [d, r] : alloc)
          md << "| " << d.model << " | " << d.batch << " | " << std::fixed << std::setprecision(1) << d.eager_ms << " | "
             << r.eager_ms << " | " << std::setprecision(2) << d.eager_ms / r.eager_ms << "x | " << std::setprecision(1)
             << d.frozen_ms << " | " << r.frozen_ms << " | " << std::setprecision(2) << d.frozen_ms / r.frozen_ms
             << "x |\n";
        md << "\nThe ratios in the table above compare method and baseline under the same setting; with glibc's "
              "defaults a forward-only row's ratio is its frozen cost over the eager cost of the first and third "
              "columns here. The frozen graph's own activation buffers come from the oneDNN plan's pool, kept "
              "between runs whatever the setting (docs/methods.md, oneDNN plan), so it depends on the setting far "
              "less than eager forwards; what remains is the allocations of the ops the plan leaves to LibTorch.\n";
      }
      std::ofstream(o.markdown) << md.str();
      std::cout << "wrote " << o.markdown << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "salient_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

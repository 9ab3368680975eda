// CPU vs CUDA parity and speed of every method and metric, on a machine with a GPU and
// LibTorch but no OpenCV (the core-only build). scripts/device-check builds and runs it.
//
//   device_check [--rows N] [--time-rows T] [--repeats R] model.pt C H W [model2.pt C H W ...]
//
// For each model: loads it on the CPU and on CUDA, runs every suitable method (and the
// metrics) on both for the same N inputs and classes, and prints per row the largest
// difference over the largest value (CUDA with TF32 off, the parity that is checked, and
// with TF32 on, PyTorch's default for cuDNN convolutions, reported), whether the result
// came back on the model's device, and the CUDA time (TF32 on, T inputs) against one raw
// LibTorch forward and one forward + backward of the same T inputs. Exits 1 when a row
// throws or misses its tolerance.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "salient/explain.hpp"
#include "salient/metrics.hpp"
#include "salient/model.hpp"
#include "salient/smoothgrad.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ms_of(const std::function<void()>& f, int repeats) {
  // Warm-up: frozen copies, cuDNN's algorithm choice, and the profiling executor of
  // LibTorch 2.x, which optimises a graph on its second or third run.
  for (int i = 0; i < 3; ++i) f();
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  auto t0 = Clock::now();
  for (int i = 0; i < repeats; ++i) f();
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / repeats;
}

double rel_diff(const at::Tensor& cpu, const at::Tensor& dev) {
  at::Tensor a = cpu.to(at::kDouble), b = dev.to(at::kCPU).to(at::kDouble);
  if (a.sizes() != b.sizes()) return 1e9;
  const double scale = std::max(a.abs().max().item<double>(), 1e-12);
  return (a - b).abs().max().item<double>() / scale;
}

// Methods whose result depends on argmax/ties or random draws differ between devices by
// more than rounding; they get a looser bound (the check still catches a wrong map).
double tolerance(const std::string& name) {
  if (name == "rise" || name == "smoothgrad" || name == "vargrad" || name == "smoothgrad_sq") return 0.05;
  if (name.find("guided") != std::string::npos || name == "deconvnet") return 0.05;
  if (name == "eigencam" || name == "ablationcam" || name == "scorecam" || name == "faster_scorecam") return 0.02;
  return 0.01;
}

int failures = 0;

void set_tf32(bool on) {
  at::globalContext().setAllowTF32CuDNN(on);
  at::globalContext().setAllowTF32CuBLAS(on);
}

// Input gradient of the top class, by the module itself or through salient's forward.
at::Tensor raw_gradient(torch::jit::Module& m, const at::Tensor& x, const at::Tensor& k) {
  at::Tensor xi = x.detach().clone().requires_grad_(true);
  at::Tensor out = m.forward({xi}).toTensor();
  return torch::autograd::grad({out.gather(1, k.to(out.device()).view({-1, 1})).sum()}, {xi})[0];
}
at::Tensor model_gradient(const salient::Model& m, const at::Tensor& x, const at::Tensor& k, salient::Autograd mode) {
  at::Tensor xi = x.detach().clone().requires_grad_(true);
  at::Tensor out = m.forward(xi, {}, mode).output;
  return torch::autograd::grad({out.gather(1, k.to(out.device()).view({-1, 1})).sum()}, {xi})[0];
}

// How far LibTorch's own input gradients on the two devices are apart (max difference over
// max), on x and averaged over 8 noisy copies of x (SmoothGrad's default noise level): the
// yardstick for salient's gradient methods, whose maps cannot be closer to the CPU's than
// the gradients they are made of. Measured on an H200 with PyTorch 2.11, TF32 off: 1.2e-2
// on the demo model (PyTorch alone, also with cuDNN off; float64 agrees to 5e-16), and on a
// random ResNet-18 1.3e-1 here against 1e-6 from Python: LibTorch 2.11's setAllowTF32CuDNN
// (false) leaves the convolutions' backward on TF32 (tests/device/gradient_precision.py).
struct GradientYardstick {
  double single = 0, noisy = 0;
};

// SmoothGrad by LibTorch alone on `device`, with salient's own noise (SmoothGradOptions'
// default draw: one [1,C,H,W] draw per sample from a CPU generator seeded with `seed`,
// scaled per example by noise_level * (max - min)), so that it sees the same noisy rows.
at::Tensor raw_smoothgrad(torch::jit::Module& m, const at::Tensor& x, const at::Tensor& classes, int64_t samples,
                          double noise_level, uint64_t seed, c10::Device device) {
  at::Tensor flat = x.flatten(1);
  at::Tensor sd = noise_level * (std::get<0>(flat.max(1)) - std::get<0>(flat.min(1)));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<int64_t> one = x.sizes().vec();
  one[0] = 1;
  at::Tensor sum = at::zeros_like(x);
  for (int64_t i = 0; i < samples; ++i) {
    at::Tensor noisy = x + at::randn(one, gen, x.options()) * sd.view({-1, 1, 1, 1});
    sum += raw_gradient(m, noisy.to(device), classes).cpu();
  }
  return sum / static_cast<double>(samples);
}

GradientYardstick gradient_yardstick(const salient::Model& cpu, const salient::Model& gpu, const at::Tensor& x,
                                     const at::Tensor& classes, int64_t samples, uint64_t seed) {
  torch::jit::Module mc = cpu.module(), mg = gpu.module();
  GradientYardstick y;
  y.single = rel_diff(raw_gradient(mc, x, classes), raw_gradient(mg, x.to(gpu.device()), classes));
  y.noisy = rel_diff(raw_smoothgrad(mc, x, classes, samples, 0.15, seed, cpu.device()),
                     raw_smoothgrad(mg, x, classes, samples, 0.15, seed, gpu.device()));
  return y;
}

// Where input gradients differ between the devices: LibTorch alone (cuDNN's algorithms,
// deterministic or not) or salient's graphs (own, BatchNorm-folded). Printed, not checked.
void diagnose_gradients(const salient::Model& cpu, const salient::Model& gpu, const at::Tensor& x,
                        const at::Tensor& classes) {
  const at::Tensor xg = x.to(gpu.device());
  torch::jit::Module mc = cpu.module(), mg = gpu.module();
  set_tf32(false);
  const at::Tensor rc = raw_gradient(mc, x, classes), rg = raw_gradient(mg, xg, classes);
  at::globalContext().setDeterministicCuDNN(true);
  const at::Tensor rgd = raw_gradient(mg, xg, classes);
  const at::Tensor full = model_gradient(gpu, xg, classes, salient::Autograd::Full);
  const at::Tensor folded = model_gradient(gpu, xg, classes, salient::Autograd::Input);
  at::globalContext().setDeterministicCuDNN(false);
  const at::Tensor full_c = model_gradient(cpu, x, classes, salient::Autograd::Full);
  const at::Tensor folded_c = model_gradient(cpu, x, classes, salient::Autograd::Input);
  set_tf32(true);
  std::printf("input gradient, TF32 off (max difference / max): raw CPU vs CUDA %.1e, vs CUDA with deterministic "
              "cuDNN %.1e; own graph CPU vs CUDA %.1e; folded CPU vs CUDA %.1e; CPU folded vs raw %.1e; CUDA "
              "folded vs raw %.1e\n\n",
              rel_diff(rc, rg), rel_diff(rc, rgd), rel_diff(full_c, full), rel_diff(folded_c, folded),
              rel_diff(rc, folded_c), rel_diff(rgd.cpu(), folded));
}

void row(const std::string& model, const std::string& what, double diff, double diff_tf32, double tol,
         bool on_device, double ms, double fwd_ms, double fb_ms, const std::string& error = "") {
  const bool ok = error.empty() && diff <= tol && on_device;
  if (!ok) ++failures;
  if (!error.empty()) {
    std::printf("| %s | %s | FAIL | %s | | | | |\n", model.c_str(), what.c_str(), error.c_str());
    return;
  }
  std::printf("| %s | %s | %s | %.1e (tol %.0e)%s | %.1e | %.2f ms | %.2f | %.2f |\n", model.c_str(), what.c_str(),
              ok ? "ok" : "FAIL", diff, tol, on_device ? "" : ", NOT on the model's device", diff_tf32, ms,
              ms / fwd_ms, ms / fb_ms);
}

void check_model(const std::string& path, const std::vector<int64_t>& shape, int64_t rows, int64_t time_rows,
                 int repeats) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  const c10::Device cuda(c10::kCUDA, 0);
  salient::Model cpu = salient::Model::load(path);
  salient::Model gpu = salient::Model::load(path, cuda);
  std::printf("\n## %s on %s, %lld rows of [%lld, %lld, %lld]\n\n", name.c_str(), gpu.device().str().c_str(),
              (long long)rows, (long long)shape[0], (long long)shape[1], (long long)shape[2]);
  if (gpu.device() != cuda) {
    ++failures;
    std::printf("FAIL: Model::load(path, cuda) gave a model on %s\n", gpu.device().str().c_str());
    return;
  }
  at::manual_seed(0);
  const at::Tensor x = at::randn({rows, shape[0], shape[1], shape[2]});
  const at::Tensor xg = x.to(cuda);
  const at::Tensor x_before = xg.clone();
  // The timed batch: the parity rows repeated.
  const at::Tensor xt = xg.repeat({(time_rows + rows - 1) / rows, 1, 1, 1}).narrow(0, 0, time_rows).contiguous();

  // Raw LibTorch baselines on CUDA: one forward, and one forward + backward to the input.
  torch::jit::Module raw = gpu.module();
  set_tf32(true);
  const double fwd_ms = ms_of(
      [&] {
        at::NoGradGuard g;
        raw.forward({xt}).toTensor();
      },
      repeats);
  const double fb_ms = ms_of(
      [&] {
        at::Tensor xi = xt.detach().requires_grad_(true);
        at::Tensor out = raw.forward({xi}).toTensor();
        torch::autograd::grad({out.select(1, 0).sum()}, {xi});
      },
      repeats);
  std::printf("raw LibTorch on %lld rows (TF32 on): forward %.2f ms, forward + backward %.2f ms\n\n",
              (long long)time_rows, fwd_ms, fb_ms);
  std::printf("| model | row | result | CUDA vs CPU, TF32 off | TF32 on | CUDA time, %lld rows | / forward | / fwd+bwd |\n"
              "|---|---|---|---|---|---|---|---|\n",
              (long long)time_rows);

  // The classes the CPU model predicts, fixed for both devices.
  const at::Tensor classes = cpu.predict(x).argmax(1);
  std::vector<int64_t> ks(classes.data_ptr<int64_t>(), classes.data_ptr<int64_t>() + classes.numel());
  const salient::Target target = salient::Target::per_sample(ks);
  diagnose_gradients(cpu, gpu, x, classes);
  set_tf32(false);
  const GradientYardstick yard = gradient_yardstick(cpu, gpu, x, classes, 8, 1);
  set_tf32(true);
  std::printf("LibTorch's own input gradients, CUDA (TF32 off) vs CPU: %.1e on the input, %.1e for SmoothGrad's 8 "
              "noisy copies; the gradient methods' bound is 3x that where it exceeds their own\n\n",
              yard.single, yard.noisy);
  // Maps made of input gradients carry the gradients' own device difference.
  auto bound = [&](const std::string& m) {
    const salient::MethodInfo& info = salient::method_info(m);
    const bool noisy = info.family == "noise tunnel";
    const bool input_gradient = noisy || info.family == "input gradient" || m == "fullgrad" || m == "guided_gradcam";
    return input_gradient ? std::max(tolerance(m), 3 * (noisy ? yard.noisy : yard.single)) : tolerance(m);
  };
  std::vector<int64_t> kt;
  for (int64_t i = 0; i < time_rows; ++i) kt.push_back(ks[i % rows]);
  const salient::Target target_t = salient::Target::per_sample(kt);

  salient::ExplainSettings s;
  s.samples = 8;
  s.n_steps = 16;
  s.masks = 256;
  s.seed = 1;
  s.window = shape[1] / 4;
  s.stride = shape[1] / 4;
  at::Tensor vanilla_cpu, vanilla_gpu, gradcam_cpu, gradcam_gpu;
  for (const std::string& m : salient::suitable_methods(cpu, shape)) {
    try {
      const at::Tensor a = salient::explain(cpu, x, m, target, s).map;
      set_tf32(false);
      const at::Tensor b = salient::explain(gpu, xg, m, target, s).map;
      set_tf32(true);
      const at::Tensor b32 = salient::explain(gpu, xg, m, target, s).map;
      const double ms = ms_of([&] { salient::explain(gpu, xt, m, target_t, s); }, repeats);
      row(name, m, rel_diff(a, b), rel_diff(a, b32), bound(m), b.device() == cuda, ms, fwd_ms, fb_ms);
      if (m == "vanilla") vanilla_cpu = a, vanilla_gpu = b;
      if (m == "gradcam") gradcam_cpu = a, gradcam_gpu = b;
    } catch (const std::exception& e) {
      set_tf32(true);
      std::string msg = e.what();
      row(name, m, 0, 0, 0, false, 0, 1, 1, msg.substr(0, msg.find('\n')));
    }
  }
  // A CPU input to a CUDA model: moved there, the map comes back there.
  if (vanilla_gpu.defined()) {
    set_tf32(false);
    const at::Tensor from_cpu = salient::explain(gpu, x, "vanilla", target, s).map;
    set_tf32(true);
    // Not bitwise: cuDNN's backward kernels may sum in another order from run to run.
    const bool same = from_cpu.device() == cuda && rel_diff(vanilla_gpu.cpu(), from_cpu) < 1e-4;
    if (!same) ++failures;
    std::printf("| %s | vanilla on a CPU input | %s | map on %s | | | | |\n", name.c_str(), same ? "ok" : "FAIL",
                from_cpu.device().str().c_str());
  }
  if (!vanilla_cpu.defined()) return;
  const at::Tensor map_cpu = gradcam_cpu.defined() ? gradcam_cpu : vanilla_cpu;
  const at::Tensor map_gpu = gradcam_gpu.defined() ? gradcam_gpu : vanilla_gpu;

  // Metrics: parity of the same map's metric on both devices (the CPU's map given to both),
  // timed on the parity rows (their targets are fixed).
  auto metric = [&](const std::string& what, double tol, const std::function<at::Tensor(const salient::Model&,
                                                                                         const at::Tensor&,
                                                                                         const at::Tensor&)>& f) {
    try {
      const at::Tensor a = f(cpu, x, map_cpu);
      set_tf32(false);
      const at::Tensor b = f(gpu, xg, map_cpu);
      set_tf32(true);
      const at::Tensor b32 = f(gpu, xg, map_cpu);
      const double ms = ms_of([&] { f(gpu, xg, map_gpu); }, repeats);
      row(name, what + " (" + std::to_string(rows) + " rows)", rel_diff(a, b), rel_diff(a, b32), tol,
          b.device() == cuda || b.device().is_cpu(), ms, fwd_ms, fb_ms);
    } catch (const std::exception& e) {
      set_tf32(true);
      std::string msg = e.what();
      row(name, what, 0, 0, 0, false, 0, 1, 1, msg.substr(0, msg.find('\n')));
    }
  };
  metric("deletion auc", 0.02, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor& mp) {
    return salient::deletion(md, xi, mp, target).auc;
  });
  metric("insertion auc", 0.02, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor& mp) {
    return salient::insertion(md, xi, mp, target).auc;
  });
  metric("road morf", 0.05, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor& mp) {
    return salient::road(md, xi, mp, target).morf;
  });
  metric("infidelity", 0.05, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor& mp) {
    return salient::infidelity(md, xi, mp, target);
  });
  metric("max_sensitivity", 0.1, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor&) {
    salient::ExplainFn fn = [&](const salient::Model& mm, const at::Tensor& xx, const salient::Target& t) {
      return salient::explain(mm, xx, "vanilla", t, s);
    };
    return salient::max_sensitivity(md, xi, fn, target);
  });
  metric("sanity spearman", 0.05, [&](const salient::Model& md, const at::Tensor& xi, const at::Tensor&) {
    salient::ExplainFn fn = [&](const salient::Model& mm, const at::Tensor& xx, const salient::Target& t) {
      return salient::explain(mm, xx, "gradcam", t, s);
    };
    return salient::cascading_randomization(md, xi, fn, target).spearman;
  });

  // The caller's tensor and the model's flags are left as they were.
  if (!at::equal(xg, x_before)) {
    ++failures;
    std::printf("FAIL: the input tensor on CUDA was changed\n");
  }
  if (gpu.module().is_training()) {
    ++failures;
    std::printf("FAIL: the model was left in training mode\n");
  }
}

}  // namespace

// --self-test model.pt C H W: on the CPU alone, raw_smoothgrad against salient's
// smoothgrad (the yardstick must see salient's noisy rows).
int self_test(const std::string& path, const std::vector<int64_t>& shape) {
  salient::Model m = salient::Model::load(path);
  at::manual_seed(0);
  const at::Tensor x = at::randn({2, shape[0], shape[1], shape[2]});
  const at::Tensor classes = m.predict(x).argmax(1);
  std::vector<int64_t> ks(classes.data_ptr<int64_t>(), classes.data_ptr<int64_t>() + 2);
  torch::jit::Module mod = m.module();
  const at::Tensor raw = raw_smoothgrad(mod, x, classes, 8, 0.15, 1, m.device());
  const at::Tensor ours =
      salient::smoothgrad(m, x, salient::Target::per_sample(ks), salient::SmoothGradOptions().n_samples(8).seed(1)).map;
  const double d = rel_diff(raw, ours);
  std::printf("self-test: raw SmoothGrad vs salient's on the CPU: %.1e\n", d);
  return d < 1e-4 ? 0 : 1;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they finish, also when cut off
  if (argc == 6 && std::string(argv[1]) == "--self-test")
    return self_test(argv[2], {std::stoll(argv[3]), std::stoll(argv[4]), std::stoll(argv[5])});
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "device_check: no CUDA device\n");
    return 2;
  }
  int64_t rows = 2, time_rows = 8;
  int repeats = 5;
  std::vector<std::string> args(argv + 1, argv + argc);
  size_t i = 0;
  for (; i < args.size() && args[i].rfind("--", 0) == 0; i += 2) {
    if (args[i] == "--rows") rows = std::stoll(args[i + 1]);
    if (args[i] == "--time-rows") time_rows = std::stoll(args[i + 1]);
    if (args[i] == "--repeats") repeats = std::stoi(args[i + 1]);
  }
  if ((args.size() - i) % 4 != 0 || i == args.size()) {
    std::fprintf(stderr, "usage: device_check [--rows N] [--time-rows T] [--repeats R] model.pt C H W [...]\n");
    return 2;
  }
  for (; i < args.size(); i += 4) {
    try {
      check_model(args[i], {std::stoll(args[i + 1]), std::stoll(args[i + 2]), std::stoll(args[i + 3])}, rows,
                  time_rows, repeats);
    } catch (const std::exception& e) {
      ++failures;
      std::printf("FAIL: %s: %s\n", args[i].c_str(), e.what());
    }
  }
  std::printf("\n%d failure(s)\n", failures);
  return failures ? 1 : 0;
}

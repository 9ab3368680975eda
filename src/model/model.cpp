#include "salient/model.hpp"

#include <ATen/core/grad_mode.h>

#include <ATen/CPUGeneratorImpl.h>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include "model/graph.hpp"
#include "model/onednn_plan.hpp"
#include "salient/error.hpp"

namespace salient {

namespace {

struct Compiled {
  std::shared_ptr<torch::jit::Graph> graph;
  std::unique_ptr<torch::jit::Code> code;
  size_t n_relus = 0;
  std::vector<model::ValueRef> extras;  // suffix graphs: values read from before the layer
  bool cut = false;                     // suffix graphs: the layers before do not run
};

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// The scores in a forward's result: its first element where it is a tuple or list (a
// model may return (logits, aux)), a dict's "logits", checked to be floating-point
// [N, classes] for input x.
at::Tensor scores_of(c10::IValue out, const std::string& name, const at::Tensor& x) {
  if (out.isTuple() && !out.toTupleRef().elements().empty()) out = out.toTupleRef().elements()[0];
  if (out.isList() && !out.toListRef().empty()) out = out.toListRef()[0];
  // A dict as Hugging Face models return it: its "logits", or its one entry.
  if (out.isGenericDict()) {
    const auto dict = out.toGenericDict();
    std::string keys;
    for (const auto& kv : dict)
      keys += (keys.empty() ? "" : ", ") + (kv.key().isString() ? kv.key().toStringRef() : std::string("?"));
    const auto logits = dict.find(c10::IValue(std::string("logits")));
    SALIENT_CHECK(logits != dict.end() || dict.size() == 1, "model '", name, "' returned a dict with keys {", keys,
                  "}; salient takes the scores from its \"logits\" entry or its only one");
    out = logits != dict.end() ? logits->value() : dict.begin()->value();
  }
  SALIENT_CHECK(out.isTensor(), "model '", name, "' returned ", out.tagKind(), ", expected a [N, classes] tensor");
  at::Tensor t = out.toTensor();
  SALIENT_CHECK(t.dim() == 2 && t.size(0) == x.size(0), "model '", name, "' returned shape ", shape_str(t.sizes()),
                " for input ", shape_str(x.sizes()), ", expected [N, classes]");
  // Integer outputs (counts, class ids) have no gradient and no softmax.
  SALIENT_CHECK(at::isFloatingType(t.scalar_type()), "model '", name, "' returned ", t.scalar_type(),
                " scores; expected floating-point logits or probabilities");
  return t;
}

// The gist of a LibTorch error: its last "SomethingError: ..." line, or its first line.
std::string brief(const std::exception& e) {
  std::string msg;
  if (auto* ce = dynamic_cast<const c10::Error*>(&e))
    msg = ce->msg();
  else
    msg = e.what();
  std::istringstream is(msg);
  std::string line, first, last_error;
  while (std::getline(is, line)) {
    auto b = line.find_first_not_of(" \t");
    if (b == std::string::npos) continue;
    line = line.substr(b);
    if (first.empty()) first = line;
    auto p = line.find("Error: ");
    if (p != std::string::npos && line.find(' ') > p) last_error = line.substr(p + 7);
  }
  std::string out = last_error.empty() ? first : last_error;
  if (out.size() > 240) out = out.substr(0, 237) + "...";
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Sets eval mode for the duration of a call and restores every module's flag. Modules
// built without a "training" attribute (Module::define in C++) are left alone.
class EvalGuard {
 public:
  explicit EvalGuard(torch::jit::Module& m) {
    for (auto sub : m.modules()) {
      if (!sub.hasattr("training") || !sub.attr("training").isBool()) continue;
      bool was = sub.attr("training").toBool();
      if (was) sub.setattr("training", false);
      saved_.emplace_back(sub, was);
    }
  }
  ~EvalGuard() {
    for (auto& s : saved_)
      if (s.second) s.first.setattr("training", true);
  }

 private:
  std::vector<std::pair<torch::jit::Module, bool>> saved_;
};

}  // namespace

struct Model::Impl {
  // What depends only on the module's structure (its graph, module tree and the shapes it
  // produces), not on parameter values: a randomized() copy shares it with its source.
  struct Structure {
    std::shared_ptr<model::TapGraph> graph;
    std::vector<std::pair<std::string, std::string>> modules;  // path, class, definition order
    std::mutex mu;
    std::map<std::string, std::shared_ptr<Compiled>> compiled;
    std::map<std::vector<int64_t>, std::vector<LayerInfo>> layer_cache;
    std::map<std::vector<int64_t>, std::pair<int64_t, int64_t>> bytes_cache;  // with, without autograd
    std::map<std::vector<int64_t>, std::string> cam_layer_cache;
  };
  explicit Impl(std::shared_ptr<Structure> s = std::make_shared<Structure>())
      : structure(std::move(s)),
        graph(structure->graph),
        modules(structure->modules),
        mu(structure->mu),
        compiled(structure->compiled),
        layer_cache(structure->layer_cache),
        bytes_cache(structure->bytes_cache),
        cam_layer_cache(structure->cam_layer_cache) {}

  std::string name;
  mutable torch::jit::Module module;
  std::shared_ptr<Structure> structure;
  std::shared_ptr<model::TapGraph>& graph;
  std::vector<std::pair<std::string, std::string>>& modules;
  std::mutex& mu;
  std::map<std::string, std::shared_ptr<Compiled>>& compiled;
  std::map<std::vector<int64_t>, std::vector<LayerInfo>>& layer_cache;
  std::map<std::vector<int64_t>, std::pair<int64_t, int64_t>>& bytes_cache;
  std::map<std::vector<int64_t>, std::string>& cam_layer_cache;
  // Frozen copies of the module: for infer() in float32 and bf16, for Autograd::Input, and
  // per layer the network up to it (split_forward). Each remembers the parameters and buffers it was made from (the tensors, held, and
  // their versions) and is rebuilt when one changes: module() hands the module out.
  struct Frozen {
    std::unique_ptr<torch::jit::Module> module;  // null when building it failed
    std::unique_ptr<torch::jit::Code> code;      // Autograd::Input: its forward graph
    std::shared_ptr<model::OneDnnPlan> plan;     // infer() in float32 on the CPU, where one fits
    std::string plan_why;                        // why not, where none
    size_t n_relus = 0;                          // Autograd::Input with a ReLU rewrite
    bool packed = false;  // Autograd::Input with taps or ReLUs: one tuple of all outputs
    std::string error;
    std::vector<std::pair<at::Tensor, int64_t>> made_from;
  };
  static constexpr const char* kInferFloat32 = "infer";
  static constexpr const char* kInferBFloat16 = "infer-bf16";
  static constexpr const char* kFolded = "folded";
  // infer()'s copy: float32 runs the oneDNN plan where one fits (CPU), else
  // optimize_for_inference's graph.
  std::shared_ptr<const Frozen> infer_copy(bool bf16) const;
  mutable std::mutex frozen_mu;
  mutable std::map<std::string, std::shared_ptr<const Frozen>> frozen;
  // Calls of split_forward per layer: the frozen prefix is built on a layer's second call,
  // so that a one-off explanation does not pay for freezing (several forwards' time).
  mutable std::map<std::string, int> prefix_calls;
  // A randomized() copy explains once per block: freezing it would cost more than it saves.
  bool fold = true;
  c10::Device device = c10::Device(c10::kCPU);  // of the first parameter or buffer

  // The copy of `kind`, current with the module; `build` freezes `copy` (a clone of the
  // module in eval mode, so that the caller's module keeps its flags, weights and dtype)
  // into `f`.
  std::shared_ptr<const Frozen> frozen_copy(const std::string& kind,
                                            const std::function<void(torch::jit::Module& copy, Frozen* f)>& build) const {
    std::vector<std::pair<at::Tensor, int64_t>> made_from;
    for (const auto& p : module.parameters()) made_from.emplace_back(p, p._version());
    for (const auto& b : module.buffers()) made_from.emplace_back(b, b._version());
    std::lock_guard<std::mutex> lock(frozen_mu);
    std::shared_ptr<const Frozen>& f = frozen[kind];
    auto same = [&] {
      if (f->made_from.size() != made_from.size()) return false;
      for (size_t i = 0; i < made_from.size(); ++i)
        if (!f->made_from[i].first.is_same(made_from[i].first) || f->made_from[i].second != made_from[i].second)
          return false;
      return true;
    };
    if (f && same()) return f;
    auto next = std::make_shared<Frozen>();
    next->made_from = std::move(made_from);
    try {
      torch::jit::Module copy = module.clone();
      copy.eval();
      build(copy, next.get());
    } catch (const std::exception& e) {
      next->module.reset();
      next->error = brief(e);
    }
    f = next;
#if defined(__GLIBC__)
    // The clone's tensors and freezing's intermediates (a model's weights, twice) are
    // free now; without this glibc keeps most of them in its heap for good.
    malloc_trim(0);
#endif
    return f;
  }
  // Replaces the forward of `copy` (a clone: its class is its own) by `graph`, a graph of
  // the same module (its self type is the copy's class).
  static void set_forward(torch::jit::Module& copy, const std::shared_ptr<torch::jit::Graph>& graph) {
    auto type = copy.type();
    type->unsafeRemoveMethod("forward");
    auto* fn = copy._ivalue()->compilation_unit()->create_function(c10::QualifiedName(*type->name(), "forward"),
                                                                    graph, /*shouldMangle=*/true);
    type->addMethod(fn);
  }

  // Autograd::Input's copy for these taps and ReLU gradient: the graph compile() would run
  // for Autograd::Full, frozen, so that every BatchNorm whose convolution's output goes to
  // it alone is folded into that convolution (a tap at such a convolution keeps the pair
  // apart). The first variant holds its own folded weights; later ones share every weight
  // tensor equal to one an existing variant holds, so a variant costs its graph, not
  // another copy of the model's weights.
  std::shared_ptr<const Frozen> folded_copy(const std::vector<std::string>& taps, ReluGradient relu) const {
    std::string key = kFolded;
    if (!taps.empty() || relu != ReluGradient::Standard) {
      key += relu == ReluGradient::Guided ? "|guided" : relu == ReluGradient::Deconvnet ? "|deconvnet" : "|standard";
      for (const auto& t : taps) key += "|" + t;
    }
    return frozen_copy(key, [&](torch::jit::Module& copy, Frozen* f) {
      if (graph->stops_gradients()) throw std::runtime_error("the model detaches values (freezing drops that)");
      if (key != kFolded) {
        model::TapGraph g(copy.get_method("forward").graph());
        std::vector<model::ValueRef> refs;
        for (const auto& t : taps) refs.push_back(g.module_outputs().at(t).ref);
        // Deconvnet's rewrite waits until after freezing: it would drop the rewrite's detach.
        auto tapped = g.with_taps(refs, /*leaves=*/false, relu == ReluGradient::Standard ? 0 : 1, &f->n_relus);
        // A method returns one value: the outputs leave as one tuple, unpacked after a run.
        std::vector<torch::jit::Value*> outs(tapped->outputs().begin(), tapped->outputs().end());
        while (!tapped->outputs().empty()) tapped->eraseOutput(0);
        torch::jit::Node* tuple = tapped->createTuple(outs);
        tapped->appendNode(tuple);
        tapped->registerOutput(tuple->output());
        set_forward(copy, tapped);
        f->packed = true;
      }
      // Only freeze: optimize_for_inference's oneDNN layouts have no autograd.
      f->module = std::make_unique<torch::jit::Module>(torch::jit::freeze(copy));
      auto frozen_graph = f->module->get_method("forward").graph();
      if (relu == ReluGradient::Deconvnet) {
        // The ReLU outputs are the last values of the output tuple.
        torch::jit::Node* tuple = frozen_graph->outputs()[0]->node();
        if (tuple->kind() != c10::prim::TupleConstruct || tuple->inputs().size() < f->n_relus)
          throw std::runtime_error("the frozen graph lost its output tuple");
        std::vector<torch::jit::Value*> relus(tuple->inputs().end() - f->n_relus, tuple->inputs().end());
        model::unmask_relus(*frozen_graph, &relus);
      }
      share_weights(*frozen_graph, key);
      f->code = std::make_unique<torch::jit::Code>(frozen_graph, "salient_folded");
    });
  }

  // Points each tensor constant of `graph` that equals (same shape, type and values) one
  // held by another live Autograd::Input copy at that one instead. Called with frozen_mu
  // held (inside frozen_copy's build).
  void share_weights(torch::jit::Graph& graph, const std::string& key) const {
    auto tensor_constant = [](torch::jit::Node* n) {
      return n->kind() == c10::prim::Constant && n->hasAttribute(c10::attr::value) &&
             n->kindOf(c10::attr::value) == torch::jit::AttributeKind::t;
    };
    std::multimap<std::vector<int64_t>, at::Tensor> held;
    for (const auto& kv : frozen) {
      if (kv.first == key || kv.first.rfind(kFolded, 0) != 0 || !kv.second || !kv.second->module) continue;
      for (torch::jit::Node* n : kv.second->module->get_method("forward").graph()->nodes())
        if (tensor_constant(n)) {
          const at::Tensor& t = n->t(c10::attr::value);
          held.emplace(t.sizes().vec(), t);
        }
    }
    if (held.empty()) return;
    for (torch::jit::Node* n : graph.nodes()) {
      if (!tensor_constant(n)) continue;
      const at::Tensor t = n->t(c10::attr::value);
      auto range = held.equal_range(t.sizes().vec());
      for (auto it = range.first; it != range.second; ++it) {
        const at::Tensor& h = it->second;
        if (h.is_same(t)) break;
        if (h.scalar_type() == t.scalar_type() && h.device() == t.device() && h.strides() == t.strides() &&
            at::equal(h, t)) {
          n->t_(c10::attr::value, h);
          break;
        }
      }
    }
  }

  // bias_layers(): the layers found once, each with the tensors its bias derives from
  // (conv: bias; BatchNorm: bias, running_mean, weight, running_var) as last seen.
  struct BiasEntry {
    BiasLayer layer;
    torch::jit::Module module;
    double eps;                         // BatchNorm only
    std::string input_module;           // BatchNorm only: the module whose output is its sole input
    at::Tensor factor;                  // BatchNorm only: y = factor · x + bias, as last computed
    std::vector<at::Tensor> sources;    // as of the last computation
    std::vector<int64_t> versions;
  };
  mutable std::mutex bias_mu;
  mutable bool bias_scanned = false;
  mutable std::vector<BiasEntry> bias_cache;

  std::shared_ptr<Compiled> compile(const std::vector<std::string>& taps, Autograd mode, ReluGradient relu) const {
    std::string key = mode == Autograd::FromTaps ? "L" : "F";
    key += std::to_string(static_cast<int>(relu)) + "|";
    for (const auto& t : taps) key += t + "|";
    std::vector<model::ValueRef> refs;
    for (const auto& t : taps) refs.push_back(graph->module_outputs().at(t).ref);
    return cached(key, [&](Compiled* c) {
      c->graph = graph->with_taps(refs, mode == Autograd::FromTaps, static_cast<int>(relu), &c->n_relus);
    });
  }

  // The compiled graph under `key`, built by `build` on first use.
  std::shared_ptr<Compiled> cached(const std::string& key, const std::function<void(Compiled*)>& build) const {
    std::lock_guard<std::mutex> lock(mu);
    auto it = compiled.find(key);
    if (it != compiled.end()) return it->second;
    auto c = std::make_shared<Compiled>();
    build(c.get());
    c->code = std::make_unique<torch::jit::Code>(c->graph, "salient_forward");
    compiled[key] = c;
    return c;
  }

  // Runs a compiled graph and returns its outputs; converts the model's own errors.
  std::vector<c10::IValue> run(const torch::jit::Code& code, const at::Tensor& x,
                               const torch::jit::Module* self = nullptr) const {
    EvalGuard eval(module);
    torch::jit::Stack stack{(self ? *self : module)._ivalue(), x};
    try {
      torch::jit::InterpreterState(code).run(stack);
    } catch (const std::exception& e) {
      SALIENT_FAIL("model '", name, "' failed on input of shape ", shape_str(x.sizes()), ": ",
                   brief(e));
    }
    return stack;
  }

  // Estimated bytes a sample of this shape needs: {forward and backward, forward only}.
  std::pair<int64_t, int64_t> sample_bytes(const std::vector<int64_t>& input_shape) const;

  // The suffix graph after `layer` (cached): inputs self, the activation, the extras.
  std::shared_ptr<Compiled> suffix_code(const std::string& layer) const {
    const model::ValueRef ref = graph->module_outputs().at(layer).ref;
    return cached("S|" + layer, [&](Compiled* c) {
      auto s = graph->suffix(ref);
      c->graph = s.graph, c->extras = s.extras, c->cut = s.cut;
    });
  }

  // Sets up a frozen copy to run forward-only: the oneDNN plan where one fits (float32 on
  // the CPU), else optimize_for_inference's graph. `float32` is false for the bf16 copy.
  void optimise(torch::jit::Module frozen, Frozen* fr, bool float32) const;
  // Runs such a copy: the plan where it has one and the input fits it, else its module.
  static c10::IValue run_frozen(const Frozen& f, const at::Tensor& x) {
    if (f.plan && x.scalar_type() == at::kFloat && x.device().is_cpu()) {
      try {
        return f.plan->run(x);
      } catch (const std::runtime_error&) {
        // This input's shapes do not fit the plan (see OneDnnPlan::run): the graph runs as it is.
      }
    }
    return f.module->forward({x});
  }

  // A forward with one tap, Autograd::FromTaps or Off, split at the tap: the network up to
  // the layer runs a frozen copy (BatchNorm folded) on the oneDNN plan where one fits,
  // else optimize_for_inference's graph (0.5-0.65 of an eager forward's time here on the
  // plan, 0.55-0.8 on LibTorch's graph), the rest runs the model's own graph from
  // the activation, recording autograd from it when asked. Returns an empty stack when the
  // split does not apply (first call for the layer, a rest that reads the input, a model
  // that cannot be frozen): the caller runs the whole graph then. Otherwise the stack
  // holds the output and the activation, as the whole graph's would.
  std::vector<c10::IValue> split_forward(const at::Tensor& x, const std::string& layer, Autograd autograd) const {
    auto suffix = suffix_code(layer);
    if (!suffix->cut) return {};
    {
      std::lock_guard<std::mutex> lock(frozen_mu);
      if (++prefix_calls[layer] < 2) return {};
    }
    std::vector<model::ValueRef> refs{graph->module_outputs().at(layer).ref};
    refs.insert(refs.end(), suffix->extras.begin(), suffix->extras.end());
    auto f = frozen_copy("prefix|" + layer, [&](torch::jit::Module& copy, Frozen* fr) {
      // The copy's own graph (its self type is the copy's class): same structure, so the
      // same node tags.
      model::TapGraph copy_graph(copy.get_method("forward").graph());
      auto prefix = copy_graph.prefix(refs);
      set_forward(copy, prefix);
      optimise(torch::jit::freeze(copy), fr, true);
    });
    if (!f->module) return {};
    std::vector<c10::IValue> values;
    try {
      at::NoGradGuard no_grad;
      c10::IValue out = run_frozen(*f, x);
      if (!out.isTuple()) return {};
      for (const auto& v : out.toTupleRef().elements()) {
        if (!v.isTensor()) return {};
        values.push_back(v);
      }
    } catch (const std::exception&) {
      return {};  // the whole graph runs and reports the model's error in its terms
    }
    if (values.size() != refs.size()) return {};
    at::Tensor act = values[0].toTensor();
    // A leaf of ours, as the whole graph's detach + requires_grad_ makes it: the backward
    // from the output stops here.
    if (autograd == Autograd::FromTaps) act = act.detach().requires_grad_(true);
    torch::jit::Stack stack{module._ivalue(), act};
    stack.insert(stack.end(), values.begin() + 1, values.end());
    {
      at::AutoGradMode grad_mode(autograd == Autograd::FromTaps);
      EvalGuard eval(module);
      try {
        torch::jit::InterpreterState(*suffix->code).run(stack);
      } catch (const std::exception& e) {
        SALIENT_FAIL("model '", name, "' failed after layer '", layer, "' on input of shape ", shape_str(x.sizes()),
                     ": ", brief(e));
      }
    }
    stack.resize(1);
    stack.push_back(act);
    return stack;
  }

  // The input as the module gets it: on its device, and a copy of its own where the
  // forward writes to its input (a clone keeps the gradient path back to the caller's).
  at::Tensor own_input(const at::Tensor& input) const {
    at::Tensor x = input.to(device);
    return graph->writes_input() && x.is_same(input) ? x.clone() : x;
  }

  void init() {
    auto forward = module.get_method("forward").graph();
    SALIENT_CHECK(forward->inputs().size() == 2, "model '", name, "': forward takes ", forward->inputs().size() - 1,
                  " inputs; salient explains models that take one image batch");
    graph = std::make_shared<model::TapGraph>(forward);
    for (const auto& nm : module.named_modules()) {
      if (nm.name.empty()) continue;
      std::string kind;
      auto it = graph->module_kinds().find(nm.name);
      if (it != graph->module_kinds().end()) kind = it->second;
      if (kind.empty() && nm.value.type()->name()) kind = nm.value.type()->name()->name();
      modules.emplace_back(nm.name, kind);
    }
    // Methods hand the model float32 inputs: a half or double model would fail at its
    // first layer with LibTorch's words about types.
    for (const auto& p : module.parameters())
      SALIENT_CHECK(!at::isFloatingType(p.scalar_type()) || p.scalar_type() == at::kFloat, "model '", name,
                    "' has ", p.scalar_type(), " parameters; salient explains float32 models (export after "
                    "model.float())");
    device = c10::Device(c10::kCPU);
    bool found = false;
    for (const auto& p : module.parameters())
      if (!found) device = p.device(), found = true;
    for (const auto& b : module.buffers())
      if (!found && b.defined()) device = b.device(), found = true;
  }
};

Model Model::load(const std::string& path, c10::Device device) {
  std::ifstream f(path, std::ios::binary);
  SALIENT_CHECK(f.good(), "model file '", path, "' not found or not readable");
  f.seekg(0, std::ios::end);
  SALIENT_CHECK(f.tellg() > 0, "model file '", path, "' is empty");
  f.seekg(0);
  char magic[2] = {0, 0};
  f.read(magic, 2);
  SALIENT_CHECK(magic[0] == 'P' && magic[1] == 'K', "model file '", path,
                "' is not a TorchScript model (not a zip archive; export it with torch.jit.trace "
                "or torch.jit.script and save it with .save())");
  SALIENT_CHECK(device.is_cpu() || (device.is_cuda() && torch::cuda::is_available()), "model file '", path,
                "': device ", device.str(), " is not available here (",
                device.is_cuda() ? "this LibTorch has no CUDA, or no GPU is present" : "only cpu and cuda are supported",
                ")");
  auto impl = std::make_shared<Impl>();
  impl->name = path;
  try {
    impl->module = torch::jit::load(path, device);
  } catch (const std::exception& e) {
    SALIENT_FAIL("model file '", path, "' is not a TorchScript model (", brief(e),
                 "); export it with torch.jit.trace or torch.jit.script");
  }
  SALIENT_CHECK(impl->module.find_method("forward").has_value(), "model file '", path,
                "' has no forward method");
  // Our own copy: attribution never needs parameter gradients, so autograd records
  // nothing for them; and it always runs in eval mode, so set that once.
  for (auto p : impl->module.parameters()) p.requires_grad_(false);
  impl->module.eval();
  impl->init();
  return Model(impl);
}

Model Model::from_module(const torch::jit::Module& module, const std::string& name) {
  auto impl = std::make_shared<Impl>();
  impl->name = name;
  impl->module = module;
  SALIENT_CHECK(impl->module.find_method("forward").has_value(), "module '", name,
                "' has no forward method");
  impl->init();
  return Model(impl);
}

std::vector<std::string> Model::parameter_blocks(size_t min_blocks) const {
  // Start from the top-level modules owning parameters; while there are too few, split
  // every block that has parameter-owning children into them (in order).
  using Block = std::pair<std::string, torch::jit::Module>;
  auto owning_children = [](const Block& b) {
    std::vector<Block> out;
    for (const auto& c : b.second.named_children())
      if (c.value.parameters(/*recurse=*/true).size() > 0)
        out.emplace_back(b.first.empty() ? c.name : b.first + "." + c.name, c.value);
    return out;
  };
  std::vector<Block> blocks = owning_children({"", impl_->module});
  while (blocks.size() < min_blocks) {
    std::vector<Block> next;
    bool split = false;
    for (const auto& b : blocks) {
      auto kids = owning_children(b);
      if (kids.empty()) {
        next.push_back(b);
      } else {
        next.insert(next.end(), kids.begin(), kids.end());
        split = true;
      }
    }
    if (!split) break;
    blocks = std::move(next);
  }
  std::vector<std::string> names;
  for (const auto& b : blocks) names.push_back(b.first);
  return names;
}

namespace {

// A copy of a module tree that shares the parameter tensors and class types: new objects
// down to every submodule, so that replacing a parameter of the copy leaves the source's
// alone, without copying a single weight.
c10::intrusive_ptr<c10::ivalue::Object> copy_module_objects(const c10::intrusive_ptr<c10::ivalue::Object>& obj) {
  auto copy = obj->copy();
  for (size_t i = 0; i < copy->slots().size(); ++i) {
    const c10::IValue& v = copy->getSlot(i);
    if (v.isObject() && v.toObjectRef().type()->is_module()) copy->setSlot(i, copy_module_objects(v.toObject()));
  }
  return copy;
}

}  // namespace

Model Model::randomized(const std::vector<std::string>& modules, uint64_t seed) const {
  torch::jit::Module copy(copy_module_objects(impl_->module._ivalue()));
  std::map<std::string, torch::jit::Module> by_path;
  for (const auto& nm : copy.named_modules()) by_path.emplace(nm.name, nm.value);
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < modules.size(); ++i) {
    const std::string& path = modules[i];
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + i);
    auto it = by_path.find(path);
    SALIENT_CHECK(it != by_path.end(), "randomized: model '", impl_->name, "' has no module '", path, "'");
    for (torch::jit::Module sub : it->second.modules()) {
      std::vector<std::pair<std::string, at::Tensor>> params;
      for (const auto& p : sub.named_parameters(/*recurse=*/false)) params.emplace_back(p.name, p.value);
      for (const auto& p : params) {
        at::Tensor v = p.second.detach();
        const double mean = v.numel() > 0 ? v.mean().item<double>() : 0.0;
        const double sd = v.numel() > 1 ? v.std(/*unbiased=*/false).item<double>() : 0.0;
        // A new tensor for the copy: the original model's parameters are never written.
        // Drawn on the CPU generator wherever the model lives: the same copy on every device.
        at::Tensor fresh = at::empty(v.sizes(), v.options().device(at::kCPU));
        fresh.normal_(mean, sd, gen);
        fresh = fresh.to(v.device());
        sub.register_parameter(p.first, fresh, /*is_buffer=*/false);
      }
    }
  }
  // Same classes and graph: the copy shares the compiled graphs and shape caches.
  auto impl = std::make_shared<Impl>(impl_->structure);
  impl->name = impl_->name + " (randomized)";
  impl->module = copy;
  impl->fold = false;
  impl->device = impl_->device;
  return Model(impl);
}

void Model::check_layer(const std::string& path) const {
  const auto& outs = impl_->graph->module_outputs();
  if (outs.count(path)) return;
  bool exists = std::any_of(impl_->modules.begin(), impl_->modules.end(),
                            [&](const auto& m) { return m.first == path; });
  SALIENT_CHECK(!exists, "layer '", path, "' of model '", impl_->name,
                "' produces no tensor that leaves it (an Identity or unused module); pick another "
                "layer (salient layers lists them)");
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& kv : outs) scored.emplace_back(edit_distance(path, kv.first), kv.first);
  std::stable_sort(scored.begin(), scored.end());
  std::string closest;
  for (size_t i = 0; i < scored.size() && i < 5; ++i) closest += (i ? ", " : "") + scored[i].second;
  SALIENT_FAIL("unknown layer '", path, "' in model '", impl_->name, "'; closest: ", closest);
}

ForwardResult Model::forward(const at::Tensor& input, const std::vector<std::string>& taps, Autograd autograd,
                             ReluGradient relu) const {
  SALIENT_CHECK(input.defined(), "model '", impl_->name, "': input tensor is undefined");
  // On the model's device (the same tensor when it is there already; a copy keeps the
  // autograd path back to the caller's tensor otherwise).
  const at::Tensor x = impl_->own_input(input);
  for (const auto& t : taps) check_layer(t);
  std::shared_ptr<const Impl::Frozen> folded;
  if (autograd == Autograd::Input) {
    if (impl_->fold) folded = impl_->folded_copy(taps, relu);
    if (folded && !folded->module) folded.reset();  // cannot be frozen
    if (!folded) autograd = Autograd::Full;         // the model's own graph
  }
  std::vector<c10::IValue> stack;
  size_t n_relus = 0;
  const bool split = (autograd == Autograd::FromTaps || autograd == Autograd::Off) && taps.size() == 1 &&
                     relu == ReluGradient::Standard && impl_->fold;
  if (split) stack = impl_->split_forward(x, taps[0], autograd);
  if (folded) {
    at::AutoGradMode enable(true);
    stack = impl_->run(*folded->code, x, folded->module.get());
    n_relus = folded->n_relus;
    if (folded->packed) {
      SALIENT_CHECK(stack.size() == 1 && stack[0].isTuple(), "internal: folded copy of model '", impl_->name,
                    "' returned no tuple");
      const auto elements = stack[0].toTupleRef().elements();
      stack.assign(elements.begin(), elements.end());
    }
  } else if (stack.empty()) {
    auto compiled = impl_->compile(taps, autograd, relu);
    n_relus = compiled->n_relus;
    at::AutoGradMode grad_mode(autograd != Autograd::Off);
    stack = impl_->run(*compiled->code, x);
  }
  ForwardResult r;
  r.output = scores_of(stack.at(0), impl_->name, x);
  // Else the first gradient taken fails with LibTorch's "element 0 of tensors does not
  // require grad".
  SALIENT_CHECK(!(autograd == Autograd::Full || autograd == Autograd::Input) || !x.requires_grad() ||
                    r.output.requires_grad(),
                "model '", impl_->name, "': its output does not depend on its input through autograd (the forward "
                "detaches the input or computes from it under torch.no_grad), so input gradients cannot be taken; "
                "methods that only run forwards (occlusion, rise, scorecam, ...) still can");
  for (size_t i = 0; i < taps.size(); ++i) {
    const auto& v = stack.at(i + 1);
    SALIENT_CHECK(v.isTensor(), "layer '", taps[i], "' did not produce a tensor");
    r.taps.push_back(v.toTensor());
  }
  for (size_t i = 0; i < n_relus; ++i) r.relus.push_back(stack.at(1 + taps.size() + i).toTensor());
  return r;
}

const char* precision_name(Precision p) { return p == Precision::BFloat16 ? "bf16" : "float32"; }

Precision parse_precision(const std::string& name) {
  if (name == "float32" || name == "fp32") return Precision::Float32;
  if (name == "bf16" || name == "bfloat16") return Precision::BFloat16;
  SALIENT_FAIL("unknown precision '", name, "' (expected float32 or bf16)");
}

bool cpuinfo_has_native_bf16(const std::string& cpuinfo) {
  std::istringstream lines(cpuinfo);
  std::string line;
  while (std::getline(lines, line)) {
    // x86 lists its features on "flags" lines, Arm on "Features" lines.
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16" || w == "bf16") return true;
  }
  return false;
}

bool native_bf16() {
  static const bool has = [] {
    std::ifstream f("/proc/cpuinfo");
    std::stringstream text;
    text << f.rdbuf();
    return cpuinfo_has_native_bf16(text.str());
  }();
  return has;
}

namespace {

// SALIENT_ONEDNN=0 turns the oneDNN runner off (infer then runs optimize_for_inference's
// graph): for comparing the two.
bool onednn_plan_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("SALIENT_ONEDNN");
    return model::onednn_plan_available() && !(v && std::string(v) == "0");
  }();
  return on;
}

}  // namespace

std::shared_ptr<const Model::Impl::Frozen> Model::Impl::infer_copy(bool bf16) const {
  return frozen_copy(bf16 ? kInferBFloat16 : kInferFloat32, [&](torch::jit::Module& copy, Frozen* fr) {
    if (bf16) {
      copy.to(at::kBFloat16);
      // oneDNN's bf16 convolutions are fastest on channels-last (NHWC) data: 4-D weights
      // and the input take that layout (0.38-0.42 of an eager float32 forward on the
      // ResNets here, against 0.47-0.53 in the default layout).
      for (const auto& p : copy.parameters(/*recurse=*/true))
        if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
    }
    optimise(torch::jit::freeze(copy), fr, !bf16);
  });
}

void Model::Impl::optimise(torch::jit::Module frozen, Frozen* fr, bool float32) const {
  if (float32) {
    if (!device.is_cpu())
      fr->plan_why = "the model is on " + device.str();
    else if (!onednn_plan_enabled())
      fr->plan_why = model::onednn_plan_available() ? "turned off (SALIENT_ONEDNN=0)" : "this build has no oneDNN";
    else
      fr->plan = model::OneDnnPlan::build(frozen.get_method("forward").graph(), &fr->plan_why);
    if (fr->plan) {
      // Kept unoptimised: it runs only where an input's shapes do not fit the plan.
      fr->module = std::make_unique<torch::jit::Module>(frozen);
      return;
    }
  }
  fr->module = std::make_unique<torch::jit::Module>(torch::jit::optimize_for_inference(frozen));
}

void Model::release_buffers() const {
  std::lock_guard<std::mutex> lock(impl_->frozen_mu);
  for (const auto& kv : impl_->frozen)
    if (kv.second && kv.second->plan) kv.second->plan->release_buffers();
}

int64_t Model::buffer_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->frozen_mu);
  int64_t bytes = 0;
  for (const auto& kv : impl_->frozen)
    if (kv.second && kv.second->plan) bytes += kv.second->plan->buffer_bytes();
  return bytes;
}

std::string Model::infer_runner() const {
  auto f = impl_->infer_copy(false);
  if (f->plan) return "onednn";
  return "torchscript (" + (f->module ? f->plan_why : "freezing failed: " + f->error) + ")";
}

at::Tensor Model::infer(const at::Tensor& input, Precision precision) const {
  SALIENT_CHECK(input.defined(), "model '", impl_->name, "': input tensor is undefined");
  const at::Tensor x = impl_->own_input(input);
  const bool bf16 = precision == Precision::BFloat16;
  auto f = impl_->infer_copy(bf16);
  SALIENT_CHECK(f->module, "model '", impl_->name, "' cannot run", bf16 ? " in bf16" : "",
                " (converting or freezing its copy failed: ", f->error, ")");
  at::NoGradGuard no_grad;
  c10::IValue out;
  try {
    out = bf16 ? f->module->forward({x.to(at::kBFloat16).contiguous(x.dim() == 4 ? at::MemoryFormat::ChannelsLast
                                                                                : at::MemoryFormat::Contiguous)})
               : Impl::run_frozen(*f, x);
  } catch (const std::exception& e) {
    SALIENT_FAIL("model '", impl_->name, "' failed", bf16 ? " in bf16" : "", " on input of shape ", shape_str(x.sizes()),
                 ": ", brief(e));
  }
  const at::Tensor scores = scores_of(out, impl_->name, x);
  return bf16 ? scores.to(at::kFloat) : scores;
}

std::vector<std::string> Model::frozen_copies() const {
  std::lock_guard<std::mutex> lock(impl_->frozen_mu);
  std::vector<std::string> names;
  for (const auto& kv : impl_->frozen)
    if (kv.second && kv.second->module) names.push_back(kv.first);
  return names;
}

LayerState Model::run_to_layer(const at::Tensor& input, const std::string& layer) const {
  SALIENT_CHECK(input.defined(), "model '", impl_->name, "': input tensor is undefined");
  const at::Tensor x = input.to(impl_->device);
  check_layer(layer);
  const model::ValueRef ref = impl_->graph->module_outputs().at(layer).ref;
  auto suffix = impl_->suffix_code(layer);
  std::vector<model::ValueRef> refs{ref};
  refs.insert(refs.end(), suffix->extras.begin(), suffix->extras.end());
  auto prefix = impl_->cached("P|" + layer, [&](Compiled* c) { c->graph = impl_->graph->with_taps(refs, false); });
  std::vector<c10::IValue> stack;
  {
    at::NoGradGuard no_grad;
    // x stays as it came: the whole network may run from it again below.
    stack = impl_->run(*prefix->code, impl_->own_input(x));
  }
  LayerState st;
  st.layer = layer;
  st.output = scores_of(stack.at(0), impl_->name, x);
  st.activation = stack.at(1).toTensor();
  bool batch_major = true;
  for (size_t i = 0; i < suffix->extras.size(); ++i) {
    at::Tensor e = stack.at(2 + i).toTensor();
    batch_major = batch_major && e.dim() > 0 && e.size(0) == x.size(0);
    st.extras.push_back(e);
  }
  // Extras that are not per-sample cannot be split by row: run the whole network then.
  if (!suffix->cut || !batch_major) {
    st.extras.clear();
    st.input = x;
  }
  return st;
}

at::Tensor Model::run_from_layer(const LayerState& st, const at::Tensor& activations, const at::Tensor& examples) const {
  const model::ValueRef ref = impl_->graph->module_outputs().at(st.layer).ref;
  const bool full = st.input.defined();
  auto code = full ? impl_->cached("R|" + st.layer, [&](Compiled* c) { c->graph = impl_->graph->suffix(ref, false).graph; })
                   : impl_->suffix_code(st.layer);
  at::Tensor idx = examples.to(at::kLong);
  torch::jit::Stack stack{impl_->module._ivalue()};
  if (full) stack.push_back(st.input.index_select(0, idx));
  stack.push_back(activations);
  for (const auto& e : st.extras) stack.push_back(e.index_select(0, idx));
  at::NoGradGuard no_grad;
  EvalGuard eval(impl_->module);
  try {
    torch::jit::InterpreterState(*code->code).run(stack);
  } catch (const std::exception& e) {
    SALIENT_FAIL("model '", impl_->name, "' failed after layer '", st.layer, "' on activations of shape ",
                 shape_str(activations.sizes()), ": ", brief(e));
  }
  return scores_of(stack.at(0), impl_->name, activations);
}

std::vector<std::string> Model::tappable_layers() const {
  std::vector<std::string> names;
  for (const auto& m : impl_->modules)
    if (impl_->graph->module_outputs().count(m.first)) names.push_back(m.first);
  return names;
}

std::vector<LayerInfo> Model::layers(const std::vector<int64_t>& input_shape) const {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->layer_cache.find(input_shape);
    if (it != impl_->layer_cache.end()) return it->second;
  }
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  auto names = tappable_layers();
  auto r = forward(at::zeros(shape, at::TensorOptions().device(impl_->device)), names, Autograd::Off);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (size_t i = 0; i < names.size(); ++i) shapes[names[i]] = r.taps[i].sizes().vec();
  std::vector<LayerInfo> out;
  for (const auto& m : impl_->modules) {
    LayerInfo info{m.first, m.second, "", {}};
    auto it = impl_->graph->module_outputs().find(m.first);
    if (it != impl_->graph->module_outputs().end()) {
      info.op = it->second.op;
      info.shape = shapes[m.first];
    }
    out.push_back(info);
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->layer_cache[input_shape] = out;
  return out;
}

std::string Model::default_cam_layer(const std::vector<int64_t>& input_shape) const {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->cam_layer_cache.find(input_shape);
    if (it != impl_->cam_layer_cache.end()) return it->second;
  }
  auto infos = layers(input_shape);
  const auto& outs = impl_->graph->module_outputs();
  std::string best;
  size_t best_node = 0;
  // Dropout and friends are the identity in eval mode: the map there equals the map at
  // the module before, whose name says more.
  static const std::set<std::string> pass_through = {"aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
                                                     "aten::feature_alpha_dropout", "aten::contiguous", "aten::clone",
                                                     "aten::detach"};
  for (const auto& l : infos) {
    if (!l.tappable() || l.shape.size() != 4 || l.shape[2] * l.shape[3] <= 1) continue;
    if (pass_through.count(l.op)) continue;
    size_t node = outs.at(l.path).ref.node;
    // Later output wins; for one output shared by nested modules, the outermost.
    bool later = best.empty() || node > best_node;
    bool same_shallower = node == best_node && std::count(l.path.begin(), l.path.end(), '.') <
                                                   std::count(best.begin(), best.end(), '.');
    if (later || same_shallower) best = l.path, best_node = node;
  }
  SALIENT_CHECK(!best.empty(), "model '", impl_->name,
                "' has no layer with a 4-D output of spatial size > 1 for input ",
                shape_str(input_shape), "; give a layer explicitly");
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cam_layer_cache[input_shape] = best;
  return best;
}

namespace {
// The module's own tensor (not a detached handle), so that identity can be compared.
at::Tensor tensor_attr(const torch::jit::Module& m, const char* name) {
  if (!m.hasattr(name)) return at::Tensor();
  c10::IValue v = m.attr(name);
  return v.isTensor() ? v.toTensor() : at::Tensor();
}
}  // namespace

std::vector<BiasLayer> Model::bias_layers() const {
  // A conv's bias derives from its bias alone, a BatchNorm's from all four.
  static const char* const kSources[] = {"bias", "running_mean", "weight", "running_var"};
  std::lock_guard<std::mutex> lock(impl_->bias_mu);
  auto& cache = impl_->bias_cache;
  if (!impl_->bias_scanned) {
    // Walking the module tree costs milliseconds on a ResNet-50, and FullGrad calls this
    // on every explanation: the layers are found once.
    std::map<std::string, torch::jit::Module> by_path;
    for (const auto& nm : impl_->module.named_modules()) by_path.emplace(nm.name, nm.value);
    const auto& outs = impl_->graph->module_outputs();
    for (const auto& m : impl_->modules) {
      if (m.second != "Conv2d" && m.second != "BatchNorm2d") continue;
      auto mod = by_path.find(m.first);
      auto tap = outs.find(m.first);
      if (mod == by_path.end() || tap == outs.end()) continue;
      if (m.second == "Conv2d") {
        if (tensor_attr(mod->second, "bias").defined())
          cache.push_back({{m.first, m.second, {}, m.first, {}}, mod->second, 0.0, "", {}, {}, {}});
        continue;
      }
      // BatchNorm: eps is a constant argument of the batch_norm op, not a module attribute.
      torch::jit::Node* node = impl_->graph->producer(tap->second.ref);
      if (!node || tap->second.op != "aten::batch_norm") continue;
      auto eps = torch::jit::toIValue(node->input(7));
      if (!eps || !eps->isDouble()) continue;
      bool all = true;  // affine=False has no bias: skipped, as pytorch-grad-cam does
      for (const char* a : kSources) all = all && tensor_attr(mod->second, a).defined();
      if (!all) continue;
      // The module (a convolution, usually) whose output is this BatchNorm's input and
      // nothing else's: its gradient is the BatchNorm's rescaled per channel (see below).
      std::string input_module;
      torch::jit::Value* in = node->input(0);
      if (in->uses().size() == 1)
        for (const auto& o : outs) {
          torch::jit::Node* pn = impl_->graph->producer(o.second.ref);
          if (pn && o.second.ref.output < pn->outputs().size() && pn->outputs()[o.second.ref.output] == in) {
            input_module = o.first;
            break;
          }
        }
      cache.push_back({{m.first, m.second, {}, m.first, {}}, mod->second, eps->toDouble(), input_module, {}, {}, {}});
    }
    impl_->bias_scanned = true;
  }
  // Each bias is recomputed only when a tensor it derives from was replaced or written
  // in place since.
  std::vector<BiasLayer> out;
  out.reserve(cache.size());
  // Convolution path -> the BatchNorm (still present) whose sole input is its output.
  std::map<std::string, const Impl::BiasEntry*> batch_norm_after;
  for (auto& e : cache) {
    const bool conv = e.layer.kind == "Conv2d";
    std::vector<at::Tensor> src;
    std::vector<int64_t> versions;
    for (size_t i = 0; i < (conv ? 1u : 4u); ++i) {
      src.push_back(tensor_attr(e.module, kSources[i]));
      if (!src.back().defined()) break;
      versions.push_back(src.back()._version());
    }
    if (!src.back().defined()) continue;  // removed since
    bool same = e.layer.bias.defined() && versions == e.versions;
    for (size_t i = 0; same && i < src.size(); ++i) same = src[i].is_same(e.sources[i]);
    if (!same) {
      at::NoGradGuard no_grad;
      if (conv) {
        e.layer.bias = src[0].detach().clone();
      } else {
        e.factor = src[2] / at::sqrt(src[3] + e.eps);
        e.layer.bias = src[0] - src[1] * e.factor;
      }
      e.sources = std::move(src);
      e.versions = std::move(versions);
    }
    out.push_back(e.layer);
    if (!conv && !e.input_module.empty()) batch_norm_after[e.input_module] = &e;
  }
  // A convolution whose output goes to a BatchNorm alone is read at the BatchNorm's output,
  // rescaled by its factor (d/d conv = factor · d/d BatchNorm): a tap at the convolution
  // would keep the pair from folding.
  for (auto& l : out) {
    if (l.kind != "Conv2d") continue;
    auto bn = batch_norm_after.find(l.path);
    l.tap = bn == batch_norm_after.end() ? l.path : bn->second->layer.path;
    l.tap_scale = bn == batch_norm_after.end() ? at::Tensor() : bn->second->factor;
  }
  return out;
}

int64_t Model::input_channels() const {
  torch::jit::Value* w = impl_->graph->first_weight();
  // Follow the GetAttr chain from `self` to the weight tensor.
  std::function<std::optional<c10::IValue>(torch::jit::Value*)> resolve =
      [&](torch::jit::Value* v) -> std::optional<c10::IValue> {
    if (v == impl_->graph->graph().inputs().at(0)) return c10::IValue(impl_->module._ivalue());
    if (v->node()->kind() != c10::prim::GetAttr) return std::nullopt;
    auto parent = resolve(v->node()->input(0));
    if (!parent || !parent->isObject()) return std::nullopt;
    return parent->toObject()->getAttr(v->node()->s(c10::attr::name));
  };
  if (!w) return -1;
  auto value = resolve(w);
  if (!value || !value->isTensor() || value->toTensor().dim() < 2) return -1;
  return value->toTensor().size(1);
}

// Both estimates come from one run of the graph on a sample of zeros that keeps every
// value; cached per input shape.
std::pair<int64_t, int64_t> Model::Impl::sample_bytes(const std::vector<int64_t>& input_shape) const {
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = bytes_cache.find(input_shape);
    if (it != bytes_cache.end()) return it->second;
  }
  std::vector<std::pair<size_t, size_t>> spans;
  auto g = graph->with_all_values(&spans);
  torch::jit::Code code(g, "salient_probe");
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  at::Tensor x = at::zeros(shape, at::TensorOptions().device(device));
  std::vector<c10::IValue> stack;
  {
    at::NoGradGuard no_grad;
    stack = run(code, x);
  }
  // Each storage once (views share one), alive from its first producer to its last reader;
  // the model's outputs to the end. Views of parameters and buffers (a weight's .t()) are
  // the model's, not the sample's.
  std::set<const void*> weights;
  for (const auto& p : module.parameters()) weights.insert(p.storage().data());
  for (const auto& b : module.buffers())
    if (b.defined() && b.has_storage()) weights.insert(b.storage().data());
  const size_t first_value = stack.size() - spans.size(), end = std::numeric_limits<size_t>::max();
  std::map<const void*, std::pair<std::pair<size_t, size_t>, int64_t>> storages;  // span, bytes
  int64_t activations = 0, largest = 0;
  for (size_t k = 0; k < stack.size(); ++k) {
    const size_t i = (k + first_value) % stack.size();  // the values first, then the outputs
    const auto& v = stack[i];
    if (!v.isTensor()) continue;
    const auto& t = v.toTensor();
    if (!t.defined() || !t.has_storage() || weights.count(t.storage().data())) continue;
    const int64_t nbytes = static_cast<int64_t>(t.storage().nbytes());
    const std::pair<size_t, size_t> span = i >= first_value ? spans[i - first_value] : std::make_pair(end, end);
    auto it = storages.find(t.storage().data());
    if (it == storages.end()) {
      storages.emplace(t.storage().data(), std::make_pair(span, nbytes));
      activations += nbytes;
      largest = std::max(largest, nbytes);
    } else {
      it->second.first.first = std::min(it->second.first.first, span.first);
      it->second.first.second = std::max(it->second.first.second, span.second);
    }
  }
  // Without autograd a forward holds only the values still to be read: the most bytes
  // alive at once, over the nodes.
  std::map<size_t, int64_t> change;
  for (const auto& kv : storages) {
    change[kv.second.first.first] += kv.second.second;
    if (kv.second.first.second != end) change[kv.second.first.second + 1] -= kv.second.second;
  }
  int64_t live = 0, peak = 0;
  for (const auto& kv : change) peak = std::max(peak, live += kv.second);
  const int64_t input = x.numel() * static_cast<int64_t>(sizeof(float));
  // Autograd keeps at most the forward's values, and frees each as the backward passes it;
  // the backward's gradient buffers live a few at a time (two of the largest), and the input
  // is copied a few times (noise, leaf, gradient). ResNet-50 at 224x224: 148 MiB a row
  // estimated; SmoothGrad- and IG-1000 in chunks of at most 6 peak 464 and 786 MiB above
  // the loaded model, IG's with its folded copy's weights (docs/BENCHMARKS.md, Memory).
  const int64_t with_grad = activations + 2 * largest + 4 * input;
  // Twice the live peak: the oneDNN plan's padded blocked copies, reorders and Winograd
  // scratch, or LibTorch's own conversions, sit on top of the values themselves; plus the
  // row itself and the perturbed copy a method builds. ResNet-50 at 224x224: 19.5 MiB
  // estimated, about 11.4 MiB measured per row of a 48-row Model::infer.
  const int64_t without_grad = 2 * peak + 2 * input;
  std::lock_guard<std::mutex> lock(mu);
  bytes_cache[input_shape] = {with_grad, without_grad};
  return {with_grad, without_grad};
}

int64_t Model::bytes_per_sample(const std::vector<int64_t>& input_shape) const {
  return impl_->sample_bytes(input_shape).first;
}

int64_t Model::forward_bytes_per_sample(const std::vector<int64_t>& input_shape) const {
  return impl_->sample_bytes(input_shape).second;
}

const std::string& Model::name() const { return impl_->name; }
c10::Device Model::device() const { return impl_->device; }
torch::jit::Module& Model::module() const { return impl_->module; }

}  // namespace salient

#pragma once
// Internal: the TorchScript IR work behind Model (taps as extra graph outputs).
#include <torch/csrc/jit/ir/ir.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace salient {
namespace model {

// A value of the analysed graph, addressed by the tag of its top-level node (every
// top-level node carries one; it survives copies and mutation removal) and the output
// offset, so that it can be found again in a copy of the graph.
struct ValueRef {
  size_t node = 0;
  size_t output = 0;
};

struct ModuleOutput {
  std::string path;
  std::string op;  // kind of the producing node, e.g. "aten::relu"
  ValueRef ref;
};

// Rewrites the ReLUs producing `relu_outs` (aten::relu or relu_ nodes of `g`) so that the
// backward passes through them unmasked (deconvnet), forward values unchanged; each entry
// becomes the value that replaces the ReLU's output. Throws std::runtime_error for a value
// that no ReLU produces.
void unmask_relus(torch::jit::Graph& g, std::vector<torch::jit::Value*>* relu_outs);

class TapGraph {
 public:
  // Copies `forward`, inlines every call, and finds, for every module, the value its
  // (last) call hands to the outside. The analysis runs on a functional copy (in-place
  // tensor ops replaced where provably safe), so a module's output is its own value and
  // not a tensor a later `relu_` or `+=` overwrites.
  explicit TapGraph(const std::shared_ptr<torch::jit::Graph>& forward);

  const std::map<std::string, ModuleOutput>& module_outputs() const { return outputs_; }
  // Module class names seen in inlined call stacks, by path.
  const std::map<std::string, std::string>& module_kinds() const { return kinds_; }

  // A runnable copy returning (original output, taps...). In-place ops stay in place
  // (they save memory and time) except those that write to a tap. With `leaves`, each
  // tap that no other tap depends on is detached and made to require grad, so that a
  // backward from the output stops there.
  // `relus` 1 also returns every top-level ReLU output after the taps; 2 does the same
  // after rewriting each ReLU to y = x + detach(relu(x) - x) (value relu(x), gradient 1).
  // *n_relus receives their number.
  std::shared_ptr<torch::jit::Graph> with_taps(const std::vector<ValueRef>& taps, bool leaves, int relus = 0,
                                               size_t* n_relus = nullptr) const;
  // The network from a tapped value onwards, for re-running it on modified activations.
  // Inputs: self, the activation, then `extras` (values computed before the layer that
  // the rest reads, e.g. a skip connection), when `cut`; otherwise self, the model's
  // input and the activation (the layers before run again; used when some value the rest
  // reads from before the layer is not a tensor).
  struct Suffix {
    std::shared_ptr<torch::jit::Graph> graph;
    std::vector<ValueRef> extras;
    bool cut = false;
  };
  Suffix suffix(const ValueRef& layer, bool allow_cut = true) const;

  // The network up to the given values only: a copy whose single output is the tuple of
  // `values` (in-place ops writing to them made functional), with everything they do not
  // depend on removed. A method graph of the module the TapGraph was built from, for
  // freezing as its forward.
  std::shared_ptr<torch::jit::Graph> prefix(const std::vector<ValueRef>& values) const;

  // Whether the model's forward detaches a value (stops a gradient): torch::jit::freeze
  // drops aten::detach, so a frozen copy of such a model would differentiate through it.
  bool stops_gradients() const;

  // Whether the model's forward writes to its input (or a view of it) in place, as an
  // in-model normalisation `x.sub_(mean).div_(std)` does: run on the caller's tensor, it
  // would change it, and every later pass would see the changed values.
  bool writes_input() const;

  // A copy that also returns every tensor a top-level node produces (memory probe), after
  // the model's outputs. With `spans`, each such value's lifetime in top-level nodes:
  // [producing node, last node reading it]; the node count for the model's outputs.
  std::shared_ptr<torch::jit::Graph> with_all_values(std::vector<std::pair<size_t, size_t>>* spans = nullptr) const;

  // The node producing a value of the analysed graph.
  torch::jit::Node* producer(const ValueRef& ref) const;

  // The weight value of the first convolution or linear op, if any.
  torch::jit::Value* first_weight() const;
  torch::jit::Graph& graph() const { return *graph_; }

 private:
  std::shared_ptr<torch::jit::Graph> graph_;    // functional: analysis, probes
  std::shared_ptr<torch::jit::Graph> inlined_;  // as the model wrote it, same node tags as graph_
  std::map<std::string, ModuleOutput> outputs_;
  std::map<std::string, std::string> kinds_;
  bool writes_input_ = false;
};

}  // namespace model
}  // namespace salient

#include "model/graph.hpp"

#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/passes/constant_pooling.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

#include <functional>
#include <set>
#include <unordered_set>

namespace salient {
namespace model {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

namespace {

// "__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d" -> "Conv2d"
std::string short_class_name(const c10::ClassTypePtr& type) {
  if (!type || !type->name()) return "";
  return type->name()->name();
}

// Module path of the call that produced a node, from its inlined call stack.
// Method calls on the same module ("SELF") and free functions add nothing.
bool node_path(Node* n, std::string* path, std::vector<std::pair<std::string, std::string>>* levels) {
  auto cs = n->callstack();
  if (!cs) return false;
  path->clear();
  for (const auto& entry : (*cs)->vec()) {
    const auto& info = std::get<2>(entry);
    if (!info || info->instance_name() == "SELF") continue;
    if (!path->empty()) *path += ".";
    *path += info->instance_name();
    if (levels) levels->emplace_back(*path, short_class_name(info->class_type()));
  }
  return true;
}

bool is_under(const std::string& path, const std::string& prefix) {
  if (prefix.empty()) return true;
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '.';
}

const char* const kOutside = "\x01outside";

// The module a use belongs to. Returns false when the use says nothing about module
// boundaries (a node without call stack and without outputs: the inliner gives call
// stacks only to nodes with outputs).
bool user_path(Node* user, std::string* path) {
  for (Node* n = user; n != nullptr; n = n->owningBlock()->owningNode()) {
    if (n->kind() == c10::prim::Return && n->owningBlock()->owningNode() == nullptr) {
      *path = kOutside;
      return true;
    }
    if (node_path(n, path, nullptr)) return true;
    if (n->owningBlock()->owningNode() == nullptr) {
      if (n->outputs().empty()) return false;
      path->clear();  // top-level code of the root module
      return true;
    }
  }
  return false;
}

std::vector<Node*> top_nodes(Graph& g) {
  std::vector<Node*> nodes;
  for (Node* n : g.nodes()) nodes.push_back(n);
  return nodes;
}

bool is_tensor(const Value* v) {
  return v->type()->kind() == c10::TypeKind::TensorType;
}

// Values the top-level node `n` reads, including those read inside its blocks.
void collect_inputs(Node* n, std::vector<Value*>* out) {
  for (Value* v : n->inputs()) out->push_back(v);
  for (auto* b : n->blocks())
    for (Node* inner : b->nodes()) collect_inputs(inner, out);
}

// RemoveTensorMutation replaces each node it rewrites in place, so the functional graph
// and the inlined one correspond node for node; checked, since variants rely on it.
bool same_layout(Graph& functional, Graph& inlined) {
  auto a = top_nodes(functional), b = top_nodes(inlined);
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    std::string ka = a[i]->kind().toQualString(), kb = b[i]->kind().toQualString();
    if (ka != kb && ka + "_" != kb) return false;
    if (a[i]->outputs().size() != b[i]->outputs().size()) return false;
  }
  return true;
}

void collect_nodes(torch::jit::Block* block, std::vector<Node*>* out) {
  for (Node* n : block->nodes()) {
    out->push_back(n);
    for (auto* b : n->blocks()) collect_nodes(b, out);
  }
}

}  // namespace

TapGraph::TapGraph(const std::shared_ptr<Graph>& forward) : inlined_(forward->copy()) {
  torch::jit::Inline(*inlined_);
  graph_ = inlined_->copy();
  torch::jit::RemoveTensorMutation(graph_);
  if (!same_layout(*graph_, *inlined_)) inlined_ = graph_;  // variants then stay functional

  auto nodes = top_nodes(*graph_);
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i];
    std::string path;
    std::vector<std::pair<std::string, std::string>> levels;
    if (!node_path(n, &path, &levels) || path.empty()) continue;
    for (const auto& level : levels) kinds_.emplace(level.first, level.second);
    for (size_t o = 0; o < n->outputs().size(); ++o) {
      Value* v = n->outputs()[o];
      if (!is_tensor(v)) continue;
      for (const auto& use : v->uses()) {
        std::string up;
        if (!user_path(use.user, &up)) continue;
        // v leaves every enclosing module that does not also contain the user.
        for (const auto& level : levels) {
          if (up != kOutside && is_under(up, level.first)) continue;
          // Nodes are visited in order, so a module called twice keeps its last call.
          outputs_[level.first] = ModuleOutput{level.first, n->kind().toQualString(), {i, o}};
        }
      }
    }
  }
}

std::shared_ptr<Graph> TapGraph::with_taps(const std::vector<ValueRef>& taps, bool leaves) const {
  auto g = inlined_->copy();
  auto find = [&](const ValueRef& r) { return top_nodes(*g).at(r.node)->outputs().at(r.output); };
  if (!taps.empty() && inlined_ != graph_) {
    // Make functional exactly the in-place ops that write to a tap (or an alias of one).
    torch::jit::ValueSet tapped;
    for (const auto& t : taps) tapped.insert(find(t));
    std::unordered_set<Node*> writers;
    {
      torch::jit::AliasDb db(g);
      std::vector<Node*> all;
      collect_nodes(g->block(), &all);
      for (Node* n : all)
        if (db.writesToAlias(n, tapped)) writers.insert(n);
    }
    if (!writers.empty())
      torch::jit::RemoveTensorMutation(g, [&](Node* n) { return writers.count(n) > 0; });
  }
  std::vector<Value*> values;
  for (const auto& t : taps) values.push_back(find(t));

  std::vector<Value*> outs(values);
  if (leaves) {
    // A tap that depends on another tap stays in the graph, so that gradients flow
    // from it back to the earlier tap; only the earliest taps become leaves.
    std::set<Value*> tapset(values.begin(), values.end());
    for (size_t k = 0; k < values.size(); ++k) {
      Value* v = values[k];
      bool depends_on_tap = false;
      std::unordered_set<Value*> seen;
      std::vector<Value*> todo;
      collect_inputs(v->node(), &todo);
      while (!todo.empty() && !depends_on_tap) {
        Value* u = todo.back();
        todo.pop_back();
        if (!seen.insert(u).second) continue;
        if (u != v && tapset.count(u)) depends_on_tap = true;
        if (u->node()->owningBlock() == g->block()) collect_inputs(u->node(), &todo);
      }
      if (depends_on_tap) continue;
      torch::jit::WithInsertPoint guard(v->node()->next());
      Value* detached = g->insert(c10::aten::detach, {v});
      Value* leaf = g->insert(c10::Symbol::fromQualString("aten::requires_grad_"), {detached, true});
      v->replaceAllUsesAfterNodeWith(leaf->node(), leaf);
      outs[k] = leaf;
    }
  }
  for (Value* v : outs) g->registerOutput(v);
  // Argument lists built from constants at every call become constants, as the
  // graph executor does for the model's own forward.
  torch::jit::ConstantPropagationImmutableTypes(g);
  torch::jit::ConstantPooling(g);
  return g;
}

std::shared_ptr<Graph> TapGraph::with_all_values() const {
  auto g = graph_->copy();
  for (Node* n : top_nodes(*g)) {
    if (n->kind() == c10::prim::GetAttr || n->kind() == c10::prim::Constant) continue;
    for (Value* v : n->outputs())
      if (is_tensor(v)) g->registerOutput(v);
  }
  return g;
}

Value* TapGraph::first_weight() const {
  static const std::set<std::string> ops = {"aten::_convolution", "aten::conv1d", "aten::conv2d",
                                            "aten::conv3d", "aten::linear", "aten::addmm"};
  for (Node* n : graph_->nodes()) {
    std::string kind = n->kind().toQualString();
    if (!ops.count(kind)) continue;
    return kind == "aten::addmm" ? n->input(2) : n->input(1);
  }
  return nullptr;
}

}  // namespace model
}  // namespace salient

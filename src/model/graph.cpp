#include "model/graph.hpp"

#include <torch/csrc/jit/ir/alias_analysis.h>
#include <torch/csrc/jit/passes/constant_pooling.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
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

// Node tags: a scope named "salient_<k>" on every top-level node. Scopes are node
// metadata that copies and RemoveTensorMutation's rewrites keep (copyMetadata), and
// that nothing at run time reads; so a node keeps its tag while its position changes.
const char* const kTagPrefix = "salient_";

void tag_nodes(Graph& g) {
  auto root = c10::make_intrusive<torch::jit::Scope>();
  size_t k = 0;
  for (Node* n : g.nodes()) n->setScope(root->push(c10::Symbol::scope(kTagPrefix + std::to_string(k++))));
}

// Tag -> node; false if some top-level node has no tag.
bool tagged_nodes(Graph& g, std::map<size_t, Node*>* out) {
  out->clear();
  const std::string prefix = std::string("scope::") + kTagPrefix;
  for (Node* n : g.nodes()) {
    auto scope = n->scope();
    if (!scope) return false;
    std::string name = scope->name().toQualString();
    if (name.rfind(prefix, 0) != 0) return false;
    (*out)[std::stoul(name.substr(prefix.size()))] = n;
  }
  return true;
}

void collect_nodes(torch::jit::Block* block, std::vector<Node*>* out) {
  for (Node* n : block->nodes()) {
    out->push_back(n);
    for (auto* b : n->blocks()) collect_nodes(b, out);
  }
}

// Makes functional exactly the in-place ops that write to `values` (or an alias of one),
// so that the values keep what they held when produced.
void make_writers_functional(const std::shared_ptr<Graph>& g, const std::vector<Value*>& values) {
  torch::jit::ValueSet targets(values.begin(), values.end());
  std::unordered_set<Node*> writers;
  {
    torch::jit::AliasDb db(g);
    std::vector<Node*> all;
    collect_nodes(g->block(), &all);
    for (Node* n : all)
      if (db.writesToAlias(n, targets)) writers.insert(n);
  }
  if (!writers.empty()) torch::jit::RemoveTensorMutation(g, [&](Node* n) { return writers.count(n) > 0; });
}

// The values `refs` address in a copy of the analysed graph.
std::vector<Value*> locate(Graph& g, const std::vector<ValueRef>& refs) {
  std::map<size_t, Node*> by_tag;
  tagged_nodes(g, &by_tag);
  std::vector<Value*> found;
  for (const auto& r : refs) found.push_back(by_tag.at(r.node)->outputs().at(r.output));
  return found;
}

}  // namespace

TapGraph::TapGraph(const std::shared_ptr<Graph>& forward) : inlined_(forward->copy()) {
  torch::jit::Inline(*inlined_);
  if (inlined_->inputs().size() > 1) {
    torch::jit::AliasDb db(inlined_);
    writes_input_ = db.hasWriters(inlined_->inputs()[1]);
  }
  tag_nodes(*inlined_);
  graph_ = inlined_->copy();
  torch::jit::RemoveTensorMutation(graph_);
  std::map<size_t, Node*> by_tag;
  if (!tagged_nodes(*graph_, &by_tag)) {
    // Some rewrite dropped a tag: variants then stay functional (correct, a bit slower).
    tag_nodes(*graph_);
    inlined_ = graph_;
  }
  tagged_nodes(*graph_, &by_tag);
  std::map<Node*, size_t> tag_of;
  for (const auto& kv : by_tag) tag_of[kv.second] = kv.first;
  for (Node* n : top_nodes(*graph_)) {
    const size_t i = tag_of.at(n);
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

void unmask_relus(Graph& g, std::vector<Value*>* relu_outs) {
  std::map<Value*, Value*> done;  // a ReLU listed twice is rewritten once
  for (Value*& r : *relu_outs) {
    auto it = done.find(r);
    if (it != done.end()) {
      r = it->second;
      continue;
    }
    Node* relu = r->node();
    const std::string kind = relu->kind().toQualString();
    if (kind != "aten::relu" && kind != "aten::relu_")
      throw std::runtime_error("unmask_relus: " + kind + " is not a ReLU");
    // y = x - min(x, 0) with the min off the tape: the value of relu(x), but d y / d x = 1,
    // so the backward passes through unmasked. Two elementwise ops replace the ReLU and
    // autograd records one subtraction that saves nothing.
    Value* x = relu->input(0);
    torch::jit::WithInsertPoint guard(relu->next());
    Value* off_tape = g.insert(c10::aten::detach, {x});
    Value* negative = g.insert(c10::aten::clamp_max, {off_tape, 0});
    Value* y = g.insert(c10::aten::sub, {x, negative});
    // Every use of the ReLU comes after it, and none is among the new nodes: all go to y.
    r->replaceAllUsesWith(y);
    relu->destroy();
    done[r] = y;
    r = y;
  }
}

bool TapGraph::writes_input() const { return writes_input_; }

bool TapGraph::stops_gradients() const {
  std::vector<Node*> all;
  collect_nodes(graph_->block(), &all);
  return std::any_of(all.begin(), all.end(), [](Node* n) {
    const std::string kind = n->kind().toQualString();
    return kind == "aten::detach" || kind == "aten::detach_";
  });
}

std::shared_ptr<Graph> TapGraph::with_taps(const std::vector<ValueRef>& requested, bool leaves, int relus,
                                           size_t* n_relus) const {
  auto g = inlined_->copy();
  // ReLU outputs are handled as taps too: in-place ops writing to them become functional.
  std::vector<ValueRef> taps(requested);
  if (relus) {
    std::map<size_t, Node*> by_tag;
    tagged_nodes(*g, &by_tag);
    for (const auto& kv : by_tag) {
      std::string kind = kv.second->kind().toQualString();
      if (kind == "aten::relu" || kind == "aten::relu_") taps.push_back({kv.first, 0});
    }
  }
  if (n_relus) *n_relus = taps.size() - requested.size();
  if (!taps.empty() && inlined_ != graph_) make_writers_functional(g, locate(*g, taps));
  std::vector<Value*> all = locate(*g, taps);  // again: the rewrite replaced some nodes
  std::vector<Value*> values(all.begin(), all.begin() + requested.size());
  std::vector<Value*> relu_outs(all.begin() + requested.size(), all.end());
  if (relus == 2) {
    const std::vector<Value*> before(relu_outs);
    unmask_relus(*g, &relu_outs);
    // A requested tap at a ReLU follows it (registered as an output only below).
    for (size_t i = 0; i < before.size(); ++i) std::replace(values.begin(), values.end(), before[i], relu_outs[i]);
  }

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
  for (Value* v : relu_outs) g->registerOutput(v);
  // Argument lists built from constants at every call become constants, as the
  // graph executor does for the model's own forward.
  torch::jit::ConstantPropagation(g);
  torch::jit::ConstantPooling(g);
  return g;
}

namespace {

// Top-level nodes that read `source` directly or through other top-level nodes.
std::unordered_set<Node*> dependents(Graph& g, Value* source) {
  std::unordered_set<Node*> dep;
  std::unordered_set<Value*> tainted{source};
  for (Node* n : g.nodes()) {
    std::vector<Value*> in;
    collect_inputs(n, &in);
    for (Value* v : in)
      if (tainted.count(v)) {
        dep.insert(n);
        for (Value* o : n->outputs()) tainted.insert(o);
        break;
      }
  }
  return dep;
}

Node* top_level(Node* n) {
  while (n->owningBlock()->owningNode()) n = n->owningBlock()->owningNode();
  return n;
}

}  // namespace

TapGraph::Suffix TapGraph::suffix(const ValueRef& layer, bool allow_cut) const {
  Suffix out;
  auto g = inlined_->copy();
  // In-place ops that write to the activation become functional: the rest must read the
  // activation we hand it, not a tensor an in-place op left behind.
  if (inlined_ != graph_) make_writers_functional(g, locate(*g, {layer}));
  Value* act = locate(*g, {layer})[0];
  Value* act_in = g->addInput("salient_activation");
  act_in->setType(act->type());
  act->replaceAllUsesWith(act_in);

  // Keep what depends on the activation, and what depends on neither it nor the input
  // (constants, attributes); drop the rest, feeding its values the rest reads as inputs.
  Value* x = g->inputs().at(1);
  auto after = dependents(*g, act_in), before = dependents(*g, x);
  std::vector<Node*> dropped;
  for (Node* n : g->nodes())
    if (before.count(n) && !after.count(n)) dropped.push_back(n);
  std::map<Node*, size_t> tag_of;
  {
    std::map<size_t, Node*> by_tag;
    tagged_nodes(*g, &by_tag);
    for (const auto& kv : by_tag) tag_of[kv.second] = kv.first;
  }
  std::vector<std::pair<Value*, ValueRef>> frontier;
  bool cuttable = allow_cut;
  for (const auto& use : x->uses())  // the rest reads the model's input itself
    if (use.user->kind() == c10::prim::Return || after.count(top_level(use.user))) cuttable = false;
  for (Node* n : dropped)
    for (size_t o = 0; o < n->outputs().size(); ++o) {
      Value* v = n->outputs()[o];
      bool read_after = false;
      for (const auto& use : v->uses())
        if (use.user->kind() == c10::prim::Return || !before.count(top_level(use.user)) ||
            after.count(top_level(use.user)))
          read_after = true;
      if (!read_after) continue;
      if (!is_tensor(v) || !tag_of.count(n)) cuttable = false;
      else frontier.emplace_back(v, ValueRef{tag_of.at(n), o});
    }
  if (cuttable) {
    for (auto& f : frontier) {
      Value* in = g->addInput("salient_extra");
      in->setType(f.first->type());
      f.first->replaceAllUsesWith(in);
      out.extras.push_back(f.second);
    }
    for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) (*it)->destroy();
    g->eraseInput(1);
    out.cut = true;
  }
  torch::jit::ConstantPropagation(g);
  torch::jit::ConstantPooling(g);
  out.graph = g;
  return out;
}

std::shared_ptr<Graph> TapGraph::prefix(const std::vector<ValueRef>& values) const {
  auto g = inlined_->copy();
  if (inlined_ != graph_) make_writers_functional(g, locate(*g, values));
  std::vector<Value*> found = locate(*g, values);  // again: the rewrite replaced some nodes
  while (!g->outputs().empty()) g->eraseOutput(0);
  Node* tuple = g->createTuple(found);
  g->appendNode(tuple);
  g->registerOutput(tuple->output());
  // With the model's output gone, whatever only led to it is dead (in-place ops on dead
  // values included: the alias analysis sees they write nothing live).
  torch::jit::EliminateDeadCode(g);
  torch::jit::ConstantPropagation(g);
  torch::jit::ConstantPooling(g);
  return g;
}

std::shared_ptr<Graph> TapGraph::with_all_values(std::vector<std::pair<size_t, size_t>>* spans) const {
  auto g = graph_->copy();
  const std::vector<Node*> nodes = top_nodes(*g);
  std::map<const Node*, size_t> position;
  for (size_t i = 0; i < nodes.size(); ++i) position[nodes[i]] = i;
  std::set<const Value*> returned(g->outputs().begin(), g->outputs().end());
  auto top_of = [](Node* n) {
    while (n->owningBlock()->owningNode() != nullptr) n = n->owningBlock()->owningNode();
    return n;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node* n = nodes[i];
    if (n->kind() == c10::prim::GetAttr || n->kind() == c10::prim::Constant) continue;
    for (Value* v : n->outputs()) {
      if (!is_tensor(v)) continue;
      if (spans) {
        // Read last by the latest top-level node using it (a use inside an if or a loop
        // counts as its node's); the model's own outputs live to the end.
        size_t last = returned.count(v) ? nodes.size() : i;
        for (const auto& use : v->uses())
          if (use.user != g->return_node()) last = std::max(last, position.at(top_of(use.user)));
        spans->emplace_back(i, last);
      }
      g->registerOutput(v);
    }
  }
  return g;
}

Node* TapGraph::producer(const ValueRef& ref) const {
  std::map<size_t, Node*> by_tag;
  tagged_nodes(*graph_, &by_tag);
  auto it = by_tag.find(ref.node);
  return it == by_tag.end() ? nullptr : it->second;
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

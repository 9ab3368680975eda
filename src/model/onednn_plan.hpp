#pragma once
// Internal: Model::infer's float32 runner on CPUs. It runs a frozen forward graph with
// oneDNN primitives chosen here: Winograd for 3x3 stride-1 convolutions, the ReLU and the
// residual sum that follow a convolution fused into it, one blocked layout (nChw16c)
// between them. LibTorch's optimize_for_inference picks direct convolutions and runs every
// ReLU and sum as a pass of its own. Ops it does not know run as the graph has them, on
// plain tensors.
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>

namespace salient {
namespace model {

class OneDnnPlan {
 public:
  // The plan for `graph` (a frozen module's forward: inputs self, unused, and one
  // tensor), or null with the reason in *why: this build has no oneDNN, the graph has
  // control flow, writes in place to a value it reads again later, or leaves the plan's
  // layout inside the network (the conversions would cost what the plan saves).
  static std::shared_ptr<OneDnnPlan> build(const std::shared_ptr<torch::jit::Graph>& graph, std::string* why);
  // Runs the graph on a float32 CPU tensor; safe to call from several threads. Throws
  // std::runtime_error where this input's shapes do not fit the plan (a fused sum over
  // operands of different shapes); the caller then runs the graph itself.
  c10::IValue run(const at::Tensor& x) const;
  // Frees the activation buffers kept between runs that no output still uses.
  void release_buffers() const;
  // Bytes of activation buffers held now, in use or kept.
  int64_t buffer_bytes() const;
  ~OneDnnPlan();

  struct Impl;

 private:
  explicit OneDnnPlan(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether this build runs OneDnnPlan (found oneDNN 2.x at configure time).
bool onednn_plan_available();

}  // namespace model
}  // namespace salient

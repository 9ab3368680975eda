#pragma once
// Model: a TorchScript classifier that can run batches and hand out the output of
// any module ("tap") inside the autograd graph, without any change to the model.
//
//   salient::Model model = salient::Model::load("resnet50.pt");   // or load(path, torch::kCUDA)
//   for (const auto& l : model.layers({3, 224, 224}))
//     std::cout << l.path << " " << l.kind << "\n";                  // layer4, layer4.2.conv3, ...
//   auto out = model.forward(x, {"layer4"}, salient::Autograd::FromTaps);
//   auto g = torch::autograd::grad({out.output.select(1, 3).sum()}, {out.taps[0]})[0];
//
// Methods move their input to the model's device (device()), run there and return their
// maps there. The model runs in eval mode during every call (the flags of the caller's module are
// restored afterwards). Parameters are never differentiated: Model::load freezes them,
// and no method asks autograd for a parameter gradient.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch {
namespace jit {
struct Module;
}  // namespace jit
}  // namespace torch

namespace salient {

// How much autograd graph a forward builds.
enum class Autograd {
  Off,       // inference only: no graph at all
  Full,      // graph from whatever requires grad (the input, usually) to the output
  FromTaps,  // tapped outputs become graph leaves: a backward from the output stops there,
             // and nothing before the taps is recorded (Grad-CAM's minimal cost)
  Input,     // like Full, but runs a frozen copy with every BatchNorm folded into its
             // convolution (torch::jit::freeze, built on first use per set of taps and ReLU
             // gradient), so neither pass spends time on BatchNorm. Numerically close to
             // Full, not equal. A tap at a convolution keeps its BatchNorm apart (tap the
             // BatchNorm instead); a randomized() copy, or a model that cannot be frozen,
             // runs Full instead.
};

// The number format of Model::infer's copy. BFloat16 runs about 1.5-2x as fast on CPUs
// with native bf16 (AVX512-BF16, AMX) and GPUs, and 2-3x slower than Float32 on CPUs
// without it (oneDNN emulates it: native_bf16() tells); scores differ from Float32's in
// about the third significant digit (8-bit mantissa), so it is opt-in.
enum class Precision { Float32, BFloat16 };
const char* precision_name(Precision p);                // "float32", "bf16"
Precision parse_precision(const std::string& name);     // throws salient::Error

// Whether this CPU computes bf16 natively (x86: AVX512-BF16 or AMX-BF16; Arm: BF16), read
// once from /proc/cpuinfo; false where that cannot be read.
bool native_bf16();
// The same test on the text of a /proc/cpuinfo.
bool cpuinfo_has_native_bf16(const std::string& cpuinfo);

// How the backward passes through ReLUs, for guided backprop and deconvnet. Every ReLU
// op of the graph is affected (module or functional, in-place or not, each call).
enum class ReluGradient {
  Standard,   // the model as it is
  Guided,     // ForwardResult::relus are the ReLU outputs; a hook clamping their
              // gradient at 0 then gives relu(grad) * (y > 0) (Springenberg et al.)
  Deconvnet,  // ReLUs pass gradients through unmasked (forward values unchanged);
              // a hook clamping at 0 gives relu(grad) (Zeiler & Fergus)
};

struct LayerInfo {
  std::string path;            // module path: "features.10", "layer4.1.conv2", "body"
  std::string kind;            // module class: "Conv2d", "ReLU", "Sequential"
  std::string op;              // op producing the output: "aten::relu"; empty when untappable
  std::vector<int64_t> shape;  // output shape for the probe input (batch 1); empty if none
  bool tappable() const { return !op.empty(); }
};

struct ForwardResult {
  at::Tensor output;              // [N, classes]
  std::vector<at::Tensor> taps;   // one per requested layer, in request order
  std::vector<at::Tensor> relus;  // with ReluGradient::Guided / Deconvnet: every ReLU output
};

// A module that adds a per-channel bias to its output (FullGrad's bias terms).
struct BiasLayer {
  std::string path;  // "features.1"
  std::string kind;  // "Conv2d" or "BatchNorm2d"
  at::Tensor bias;   // [C]
  // Where the gradient at this layer's output is read: the layer itself, or for a
  // convolution whose output goes to a BatchNorm and nothing else, that BatchNorm (a tap at
  // the convolution would keep Autograd::Input from folding the pair); the gradient there
  // times tap_scale [C] (the BatchNorm's per-channel factor) is the one at the output.
  std::string tap;
  at::Tensor tap_scale;  // undefined: 1
};

// A forward stopped at a layer, to re-run the network from there on modified
// activations (Ablation-CAM, ReciproCAM).
struct LayerState {
  std::string layer;
  at::Tensor activation;           // [N, ...] the layer's output
  at::Tensor output;               // [N, classes] the model's output
  std::vector<at::Tensor> extras;  // what the rest reads from before the layer (skip connections)
  at::Tensor input;                // set when the layers before the layer must run again
};

class Model {
 public:
  // Loads a TorchScript file (torch.jit.trace or torch.jit.script output) onto `device`
  // (a CUDA device needs a LibTorch built with CUDA, and one present: else salient::Error).
  static Model load(const std::string& path, c10::Device device = c10::Device(c10::kCPU));
  // Wraps a module the caller owns: its parameters and flags are left as they are.
  static Model from_module(const torch::jit::Module& module, const std::string& name = "module");

  // Where the parameters live (the first parameter's or buffer's device; CPU if none).
  c10::Device device() const;

  // Runs a batch [N, C, H, W] (moved to device() first); taps are module paths, their
  // outputs come back in order.
  // With one tap, Autograd::FromTaps or Off and the standard ReLU gradient, a layer's
  // second and later calls run the network up to the layer on a frozen, inference-optimised
  // copy (built then; BatchNorm folded), and the rest on the model's own graph: numerically
  // close to the first call, not equal.
  ForwardResult forward(const at::Tensor& x, const std::vector<std::string>& taps = {},
                        Autograd autograd = Autograd::Off, ReluGradient relu = ReluGradient::Standard) const;
  at::Tensor predict(const at::Tensor& x) const { return forward(x).output; }
  // Output of a frozen, inference-optimised copy of the model (torch::jit::freeze with
  // BatchNorm folded into the convolutions, run as infer_runner() says), built on first use
  // and again after a parameter or buffer of module() changes; for forward-only methods.
  // Numerically close to predict(), not equal. Precision::BFloat16 runs a second frozen
  // copy with bf16 weights (optimize_for_inference's graph) on the input cast to bf16, and
  // returns float32 outputs.
  at::Tensor infer(const at::Tensor& x, Precision precision = Precision::Float32) const;
  // What runs infer() in float32: "onednn" (on the CPU, where the frozen graph fits:
  // salient's own oneDNN primitives, Winograd for 3x3 stride-1 convolutions, each ReLU and
  // residual sum fused into the convolution before it; the frozen prefix of the CAM layers
  // runs the same way) or "torchscript (<why not>)" (LibTorch's optimize_for_inference
  // graph). SALIENT_ONEDNN=0 in the environment turns the plan off. Builds infer's copy if
  // there is none yet.
  std::string infer_runner() const;
  // Hands the activation buffers infer() and the frozen CAM prefixes keep between calls
  // (the oneDNN plan's pool) back to malloc, except those an output still uses.
  // Forward-only methods and metrics call it when they return, so that what runs next can
  // reuse the memory.
  void release_buffers() const;
  // Bytes those buffers take now (0 where no oneDNN plan runs).
  int64_t buffer_bytes() const;

  // The frozen copies built so far: "infer", "infer-bf16", "folded" (Autograd::Input;
  // "folded|guided|<taps>..." with taps or another ReLU gradient), "prefix|<layer>"
  // (forward's split at a tap). Each holds its own (folded) weights, except that the
  // Autograd::Input copies share the weight tensors they have in common.
  std::vector<std::string> frozen_copies() const;

  // One forward without autograd that keeps what run_from_layer needs.
  LayerState run_to_layer(const at::Tensor& x, const std::string& layer) const;
  // The model's output [R, classes] for activation rows [R, ...], row r standing for
  // sample examples[r] of the state's batch. Only the layers after `layer` run, unless the
  // rest of the network reads a non-tensor value computed before it (then all run).
  at::Tensor run_from_layer(const LayerState& state, const at::Tensor& activations, const at::Tensor& examples) const;

  // All modules in definition order, with the output shape for a zero input of
  // shape [1, input_shape...] (input_shape is [C, H, W]).
  std::vector<LayerInfo> layers(const std::vector<int64_t>& input_shape) const;
  // Paths whose output can be tapped (no probe run needed).
  std::vector<std::string> tappable_layers() const;
  // The last module whose output is 4-D with spatial size > 1 (outermost of those
  // sharing that output), as TorchCAM and tf-keras-vis choose. Throws if none.
  std::string default_cam_layer(const std::vector<int64_t>& input_shape) const;
  // Checks that `path` names a tappable module; the error lists the closest names.
  void check_layer(const std::string& path) const;

  // Conv2d and (affine) BatchNorm2d modules with a bias, tappable, in definition order,
  // with the bias each adds to its output; for BatchNorm in eval mode that is
  // bias - running_mean * weight / sqrt(running_var + eps). The bias tensors are cached
  // (recomputed when a module's tensors change): treat them as read-only.
  std::vector<BiasLayer> bias_layers() const;

  // The top-level modules owning parameters, split into their parameter-owning children
  // until there are at least `min_blocks` (or nothing splits further), in definition
  // order: conv1, bn1, layer1 ... layer4, fc for a torchvision ResNet; features.0,
  // features.1, ..., fc for a Sequential of conv/BN plus a Linear. The blocks a cascading
  // randomisation walks through.
  std::vector<std::string> parameter_blocks(size_t min_blocks = 4) const;
  // A copy whose parameters under the given module paths are re-drawn from a Gaussian with
  // each tensor's own mean and standard deviation, module i from seed + i (so a list that
  // grows at its end keeps its earlier draws). This model is left untouched. The copy
  // shares every other parameter tensor (nothing is copied) and this model's compiled
  // graphs.
  Model randomized(const std::vector<std::string>& modules, uint64_t seed) const;

  // Input channels of the first convolution or linear layer, or -1 when unknown.
  int64_t input_channels() const;
  // Estimated bytes one sample of shape [C, H, W] needs for a forward and backward;
  // methods divide their memory budget by it to size chunks.
  int64_t bytes_per_sample(const std::vector<int64_t>& input_shape) const;
  // The same for a forward without autograd (infer and the forward-only methods), which
  // holds only the values still to be read.
  int64_t forward_bytes_per_sample(const std::vector<int64_t>& input_shape) const;

  const std::string& name() const;
  torch::jit::Module& module() const;

  struct Impl;

 private:
  explicit Model(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace salient

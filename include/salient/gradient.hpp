#pragma once
// Input-gradient methods: one forward and one backward to the input each.
//
//   auto a = salient::vanilla_gradient(model, x, salient::Target::per_sample({0, 1}));
//   auto b = salient::guided_backprop(model, x);          // predicted class
//   a.map.sizes() == x.sizes()                             // raw, sign kept
//
// vanilla_gradient (Simonyan et al. 2014): d score / d x.
// input_x_gradient (Shrikumar et al. 2016): x * d score / d x.
// guided_backprop (Springenberg et al. 2015): every ReLU passes back relu(grad) * (y > 0).
// deconvnet (Zeiler & Fergus 2014): every ReLU passes back relu(grad).
// The ReLU rules apply to every ReLU op of the TorchScript graph (modules, functional
// calls, in-place, a module called twice), without touching the model.
#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

struct VanillaOptions {
  SALIENT_ARG(Score, score) = Score::Logit;
};
using InputXGradientOptions = VanillaOptions;
using GuidedBackpropOptions = VanillaOptions;
using DeconvnetOptions = VanillaOptions;

Attribution vanilla_gradient(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                             const VanillaOptions& options = {});
Attribution input_x_gradient(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                             const InputXGradientOptions& options = {});
Attribution guided_backprop(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                            const GuidedBackpropOptions& options = {});
Attribution deconvnet(const Model& model, const at::Tensor& x, const Target& target = Target::predicted(),
                      const DeconvnetOptions& options = {});

// Makes a backward through the ReLU outputs of a Guided/Deconvnet forward clamp their
// gradient at 0 (the hook the two methods add to the ReLU backward).
void clamp_relu_gradients(const ForwardResult& forward);

}  // namespace salient

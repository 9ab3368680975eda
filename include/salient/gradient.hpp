#pragma once
// Vanilla gradient (Simonyan et al. 2014): d score / d input, sign kept.
//
//   auto a = salient::vanilla_gradient(model, x, salient::Target::per_sample({0, 1}));
//   a.map.sizes() == x.sizes()
//
// Cost: one forward and one backward to the input.
#include "salient/attribution.hpp"
#include "salient/model.hpp"
#include "salient/options.hpp"
#include "salient/target.hpp"

namespace salient {

struct VanillaOptions {
  SALIENT_ARG(Score, score) = Score::Logit;
};

Attribution vanilla_gradient(const Model& model, const at::Tensor& x,
                             const Target& target = Target::predicted(),
                             const VanillaOptions& options = {});

}  // namespace salient

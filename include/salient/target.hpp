#pragma once
// What a method explains: one strict type for "which score".
//
//   salient::Target::predicted();                 // argmax of each sample's output (default)
//   salient::Target::index(3);                    // class 3 for every sample
//   salient::Target::per_sample({0, 1, 2, 3});    // one class per sample
//   salient::Target::function([](const at::Tensor& out) { return out.select(1, 2) - out.select(1, 5); },
//                             "logit 2 minus logit 5");
//
// For class targets, Score picks the raw logit (default, as Captum and pytorch-grad-cam)
// or the probability of that class: softmax over the classes, or the sigmoid of a
// binary classifier's single logit ([N, 1] output).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace salient {

enum class Score { Logit, Probability };
const char* to_string(Score s);
// Class probabilities of an output [N, K]: softmax over the K classes, or for K = 1 (a
// binary classifier's logit) its sigmoid, which a softmax over one class would flatten
// to 1 whatever the input.
at::Tensor probabilities(const at::Tensor& output);
Score score_from_string(const std::string& s);  // "logit" | "probability"

class Target {
 public:
  using ScoreFn = std::function<at::Tensor(const at::Tensor& output)>;  // [N, K] -> [N]

  static Target predicted();
  static Target index(int64_t k);
  static Target per_sample(std::vector<int64_t> ks);
  static Target function(ScoreFn fn, std::string description);

  // Class per sample [N] int64 for this output (checked against its class count);
  // -1 for every sample when the target is a score function.
  at::Tensor resolve(const at::Tensor& output) const;
  // The same without an output, for targets other than predicted(): batch n, k classes.
  at::Tensor resolve(int64_t n, int64_t k) const;
  // Differentiable score per sample [N]; `classes` comes from resolve().
  at::Tensor scores(const at::Tensor& output, const at::Tensor& classes, Score score) const;

  // Class per sample for a batch of n, not range-checked (resolve() does that against
  // an output). For index() and per_sample() only.
  std::vector<int64_t> classes(int64_t n) const;

  // The target of rows `rows` (int64 indices into the batch) of a batch of n, e.g. for
  // noisy copies of its samples. Not for predicted(): resolve the classes first.
  Target select(const at::Tensor& rows, int64_t n) const;

  bool is_function() const { return kind_ == Kind::Function; }
  bool is_predicted() const { return kind_ == Kind::Predicted; }
  std::string describe() const;

 private:
  enum class Kind { Predicted, Index, PerSample, Function };
  Kind kind_ = Kind::Predicted;
  std::vector<int64_t> classes_;
  ScoreFn fn_;
  std::string description_;
};

}  // namespace salient

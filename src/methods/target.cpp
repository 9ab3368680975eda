#include "salient/target.hpp"

#include "methods/common.hpp"

namespace salient {

const char* to_string(Score s) { return s == Score::Logit ? "logit" : "probability"; }

Score score_from_string(const std::string& s) {
  if (s == "logit") return Score::Logit;
  if (s == "probability" || s == "prob" || s == "softmax") return Score::Probability;
  SALIENT_FAIL("unknown score '", s, "': use logit or probability");
}

Target Target::predicted() { return Target(); }

Target Target::index(int64_t k) {
  Target t;
  t.kind_ = Kind::Index;
  t.classes_ = {k};
  return t;
}

Target Target::per_sample(std::vector<int64_t> ks) {
  SALIENT_CHECK(!ks.empty(), "per-sample targets: the list is empty");
  Target t;
  t.kind_ = Kind::PerSample;
  t.classes_ = std::move(ks);
  return t;
}

Target Target::function(ScoreFn fn, std::string description) {
  SALIENT_CHECK(fn != nullptr, "target score function is empty");
  Target t;
  t.kind_ = Kind::Function;
  t.fn_ = std::move(fn);
  t.description_ = std::move(description);
  return t;
}

at::Tensor Target::resolve(const at::Tensor& output) const {
  SALIENT_CHECK(output.dim() == 2, "model output has shape ", detail::shape_str(output.sizes()),
                "; class targets need [N, classes]");
  if (kind_ == Kind::Predicted) return output.detach().argmax(1);
  return resolve(output.size(0), output.size(1)).to(output.device());
}

at::Tensor Target::resolve(int64_t n, int64_t k) const {
  auto opts = at::TensorOptions().dtype(at::kLong);
  switch (kind_) {
    case Kind::Predicted:
      SALIENT_FAIL("the predicted target needs the model output");
    case Kind::Index:
      SALIENT_CHECK(classes_[0] >= 0 && classes_[0] < k, "target ", classes_[0],
                    " out of range: the model has ", k, " classes (0..", k - 1, ")");
      return at::full({n}, classes_[0], opts);
    case Kind::PerSample:
      SALIENT_CHECK(static_cast<int64_t>(classes_.size()) == n, "got ", classes_.size(),
                    " targets for a batch of ", n);
      for (auto c : classes_)
        SALIENT_CHECK(c >= 0 && c < k, "target ", c, " out of range: the model has ", k,
                      " classes (0..", k - 1, ")");
      return at::tensor(classes_, opts);
    case Kind::Function:
      return at::full({n}, -1, opts);
  }
  return {};
}

at::Tensor probabilities(const at::Tensor& output) {
  SALIENT_CHECK(output.defined() && output.dim() == 2, "probabilities: output must be [N, K], got ",
                output.defined() ? detail::shape_str(output.sizes()) : std::string("undefined"));
  return output.size(1) == 1 ? at::sigmoid(output) : at::softmax(output, 1);
}

at::Tensor Target::scores(const at::Tensor& output, const at::Tensor& classes, Score score) const {
  if (kind_ == Kind::Function) {
    at::Tensor s = fn_(output);
    SALIENT_CHECK(s.defined() && s.dim() == 1 && s.size(0) == output.size(0), "target function '",
                  description_, "' must return one score per sample, [", output.size(0), "]");
    return s;
  }
  at::Tensor idx = classes.to(output.device()).view({-1, 1});
  at::Tensor base = score == Score::Probability ? probabilities(output) : output;
  return base.gather(1, idx).squeeze(1);
}

std::vector<int64_t> Target::classes(int64_t n) const {
  switch (kind_) {
    case Kind::Index:
      return std::vector<int64_t>(n, classes_[0]);
    case Kind::PerSample:
      SALIENT_CHECK(static_cast<int64_t>(classes_.size()) == n, "got ", classes_.size(), " targets for a batch of ", n);
      return classes_;
    default:
      SALIENT_FAIL("this target has no fixed classes: ", describe());
  }
}

Target Target::select(const at::Tensor& rows, int64_t n) const {
  switch (kind_) {
    case Kind::Predicted:
      SALIENT_FAIL("the predicted target must be resolved before selecting rows");
    case Kind::PerSample: {
      SALIENT_CHECK(static_cast<int64_t>(classes_.size()) == n, "got ", classes_.size(), " targets for a batch of ", n);
      at::Tensor r = rows.to(at::kCPU, at::kLong).contiguous();
      std::vector<int64_t> picked;
      for (int64_t i = 0; i < r.numel(); ++i) picked.push_back(classes_.at(r.data_ptr<int64_t>()[i]));
      return per_sample(picked);
    }
    case Kind::Index:
    case Kind::Function:
      return *this;
  }
  return *this;
}

std::string Target::describe() const {
  switch (kind_) {
    case Kind::Predicted: return "predicted";
    case Kind::Index: return std::to_string(classes_[0]);
    case Kind::PerSample: {
      std::string s;
      for (size_t i = 0; i < classes_.size(); ++i) s += (i ? "," : "") + std::to_string(classes_[i]);
      return s;
    }
    case Kind::Function: return description_;
  }
  return "";
}

}  // namespace salient

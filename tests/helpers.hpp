#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <functional>
#include <map>
#include <string>

#include "salient/salient.hpp"

namespace testing_salient {

std::string data(const std::string& rel);  // path under tests/data
std::string temp_dir(const std::string& name);  // fresh empty directory

// The reference vectors (../shared/reference, copied into tests/data/reference).
struct Reference {
  std::map<std::string, at::Tensor> t;
  std::map<std::string, std::pair<double, double>> tol;  // name -> (atol, rtol)
  const at::Tensor& operator[](const std::string& name) const { return t.at(name); }
};
const Reference& reference();

// |a - b| <= atol + rtol |b| elementwise; on failure reports the worst element.
::testing::AssertionResult close(const at::Tensor& a, const at::Tensor& b, double atol, double rtol);
::testing::AssertionResult matches_reference(const at::Tensor& ours, const std::string& name);

// The message of the salient::Error that f throws, or "<no error>".
std::string msg_of(const std::function<void()>& f);

std::vector<int64_t> to_vector(const at::Tensor& t);  // int64 tensor -> vector

// The salient command line run with stdout and stderr together.
struct CliRun {
  int code = -1;
  std::string out;
  std::vector<std::string> lines() const;  // non-empty lines
  std::string last_line() const;
};
CliRun salient_cli(const std::string& args);

// A scripted module built in C++ with torch::jit::Module::define.
torch::jit::Module linear_model(const at::Tensor& weight, const at::Tensor& bias);
// one_conv_model: logits = mean(conv(x)) · fc_wᵀ, or mean(conv(x)²) · fc_wᵀ when squared.
torch::jit::Module one_conv_model(const at::Tensor& conv_w, const at::Tensor& conv_b, const at::Tensor& fc_w,
                                  bool squared = false);

}  // namespace testing_salient

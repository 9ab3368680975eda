#pragma once
// Internal helpers shared by the methods.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <vector>

#include "salient/error.hpp"

namespace salient {
namespace detail {

std::string shape_str(at::IntArrayRef s);

// The boundary check every method runs: a defined, finite, floating [N,C,H,W] batch.
// Returns it as float32.
at::Tensor checked_input(const at::Tensor& x, const char* method);

// True when t holds no NaN or Inf.
bool all_finite(const at::Tensor& t);

void check_finite(const at::Tensor& t, const char* method, const char* what);

std::vector<int64_t> to_vector(const at::Tensor& t);  // int64 values

// [C, H, W] of a batch.
std::vector<int64_t> sample_shape(const at::Tensor& x);

}  // namespace detail
}  // namespace salient

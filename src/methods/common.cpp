#include "methods/common.hpp"

#include <cmath>

namespace salient {
namespace detail {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool all_finite(const at::Tensor& t) {
  // One reduction instead of a mask: NaN and Inf survive a sum, and a float32 sum in
  // double precision cannot overflow.
  return std::isfinite(t.sum(at::kDouble).item<double>());
}

at::Tensor checked_input(const at::Tensor& x, const char* method) {
  SALIENT_CHECK(x.defined(), method, ": input tensor is undefined");
  SALIENT_CHECK(x.dim() == 4, method, ": input must be a batch [N, C, H, W], got ", shape_str(x.sizes()));
  SALIENT_CHECK(x.size(0) > 0, method, ": input batch is empty");
  SALIENT_CHECK(at::isFloatingType(x.scalar_type()), method, ": input must be floating point, got ",
                x.scalar_type());
  at::Tensor xf = x.detach().to(at::kFloat);
  SALIENT_CHECK(all_finite(xf), method,
                ": input contains non-finite values (NaN or Inf)");
  return xf;
}

void check_finite(const at::Tensor& t, const char* method, const char* what) {
  SALIENT_CHECK(all_finite(t), method, ": non-finite values (NaN or Inf) in ",
                what);
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<int64_t> sample_shape(const at::Tensor& x) { return x.sizes().slice(1).vec(); }

}  // namespace detail
}  // namespace salient

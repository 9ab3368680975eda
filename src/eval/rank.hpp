#pragma once
// The pixel order that deletion, insertion and ROAD share.
#include <ATen/core/Tensor.h>

#include "salient/metrics.hpp"

namespace salient {
namespace detail {

// rank[n][p]: position of pixel p (raster index) in sample n's order, most salient first,
// ties in raster order. Checks that the map [N,C,H,W] or [N,1,H,W] fits the input x.
at::Tensor saliency_rank(const at::Tensor& map, const at::Tensor& x, ChannelReduce reduce, const char* name);

}  // namespace detail
}  // namespace salient

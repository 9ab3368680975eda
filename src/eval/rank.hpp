#pragma once
// The pixel order that deletion, insertion and ROAD share, and the ranks behind Spearman
// correlation.
#include <ATen/core/Tensor.h>

#include <vector>

#include "salient/metrics.hpp"

namespace salient {
namespace detail {

// rank[n][p]: position of pixel p (raster index) in sample n's order, most salient first,
// ties in raster order. Checks that the map [N,C,H,W] or [N,1,H,W] fits the input x.
at::Tensor saliency_rank(const at::Tensor& map, const at::Tensor& x, ChannelReduce reduce, const char* name);

// Ranks 1..n of t's values (flattened), ties getting the mean of their ranks.
std::vector<double> mean_ranks(const at::Tensor& t);
// Pearson correlation of two rank vectors of one length: Spearman's rho. 0 when either is
// constant. The sanity check ranks the original map once for all its steps.
double rank_correlation(const std::vector<double>& ra, const std::vector<double>& rb);

}  // namespace detail
}  // namespace salient

#pragma once
// Internal helpers shared by the methods.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <functional>
#include <string>
#include <vector>

#include "salient/attribution.hpp"
#include "salient/error.hpp"
#include "salient/model.hpp"
#include "salient/smoothgrad.hpp"  // chunk_rows, forward_chunk_rows
#include "salient/target.hpp"

namespace salient {
namespace detail {

std::string shape_str(at::IntArrayRef s);

// The boundary check every method runs: a defined, finite, floating [N,C,H,W] batch.
// Returns it as float32 on the model's device (Model::device): methods run there, and
// their maps come back there.
at::Tensor checked_input(const Model& model, const at::Tensor& x, const char* method);
// The same check without a model: float32 where x is.
at::Tensor checked_input(const at::Tensor& x, const char* method);

// True when t holds no NaN or Inf.
bool all_finite(const at::Tensor& t);

void check_finite(const at::Tensor& t, const char* method, const char* what);

std::vector<int64_t> to_vector(const at::Tensor& t);  // int64 values, from any device

// Seeded draws (standard normal, uniform [0, 1)) of `size` from a CPU generator, moved to
// where `like` lives with its dtype: a seed gives the same draws on every device (a CUDA
// tensor cannot be filled from a CPU generator, and a CUDA generator draws other values).
at::Tensor seeded_randn(at::IntArrayRef size, at::Generator& gen, const at::Tensor& like);
at::Tensor seeded_rand(at::IntArrayRef size, at::Generator& gen, const at::Tensor& like);

// int64 indices [r0, r1) where `like` lives (index_select wants its index on its device).
at::Tensor row_range(int64_t r0, int64_t r1, const at::Tensor& like);

// Where a forward-only method runs its rows: the frozen inference copy (optimized) in
// `precision`, or the model as it is (float32 only).
struct Inference {
  bool optimized = true;
  Precision precision = Precision::Float32;
  at::Tensor run(const Model& model, const at::Tensor& x) const;
};
// Checks the pair for `method` (bf16 needs the frozen copy).
Inference inference(const char* method, bool optimized, Precision precision);

// Per-sample classes of a forward-only method: explicit ones as given, the predicted
// ones from one forward (recorded in *a); empty for a score function.
std::vector<int64_t> sample_classes(const Model& model, const at::Tensor& x, const Target& target,
                                    const Inference& inference, Attribution* a);

// Attribution::targets for sample_classes' result: the classes as an int64 [n] tensor where
// `like` lives, or -1 for each of n samples when there are none (a score function).
at::Tensor classes_tensor(const std::vector<int64_t>& classes, int64_t n, const at::Tensor& like);

// Scores of many perturbed rows, forward-only, in chunks: outputs_of(r0, r1) gives the
// model output for rows [r0, r1); row r belongs to sample sample_of(r) and is scored for
// that sample's class (range-checked against the output), or by the target's function.
// The model's inference buffers are released when it returns (Model::release_buffers).
at::Tensor batched_scores(const Model& model, int64_t rows, int64_t chunk, const std::function<at::Tensor(int64_t, int64_t)>& outputs_of,
                          const std::function<int64_t(int64_t)>& sample_of, const std::vector<int64_t>& classes,
                          const Target& target, Score score);

// outputs_of for perturbed inputs: make_rows(r0, r1) run through the model (or its
// frozen inference copy).
std::function<at::Tensor(int64_t, int64_t)> input_rows(const Model& model,
                                                       std::function<at::Tensor(int64_t, int64_t)> make_rows,
                                                       Inference inference);

// Chunk boundaries [0, b1, ..., rows]: as many chunks as `max_chunk` rows each would need,
// their sizes differing by one at most. 26 rows at most 25 a chunk run as 13 + 13, not
// 25 + 1, and at most 6 as 6 + 5 + 5 + 5 + 5 (a lone row costs a third more per row than
// one in a batch).
std::vector<int64_t> even_chunks(int64_t rows, int64_t max_chunk);

// The CAM family's common end: raw [N,1,h,w] and weights into a, then ReLU
// (layer_map) and bilinear upsampling to height x width, align_corners = false (map).
void finish_cam(Attribution* a, const at::Tensor& raw, const at::Tensor& weights, int64_t height, int64_t width);

// Target with the classes fixed: predicted() resolved by one forward of x (so that
// perturbed or re-drawn copies explain the same class); others as they are.
Target fixed_target(const Model& model, const at::Tensor& x, const Target& target);

// [C, H, W] of a batch.
std::vector<int64_t> sample_shape(const at::Tensor& x);

}  // namespace detail
}  // namespace salient

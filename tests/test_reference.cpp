// Parity with Captum 0.8.0 and pytorch-grad-cam 1.5.5 (tests/data/reference, copied from
// ../shared/reference), each within the tolerance its manifest gives.
#include "helpers.hpp"

using namespace testing_salient;
using salient::Model;
using salient::Target;

namespace {

const Model& smallcnn() {
  static Model m = Model::load(data("reference/smallcnn_traced.pt"));
  return m;
}

Target reference_targets() { return Target::per_sample(to_vector(reference()["targets"])); }

}  // namespace

TEST(ReferenceParity, CaptumSaliencySignedAndAbs) {
  auto a = salient::vanilla_gradient(smallcnn(), reference()["input"], reference_targets());
  EXPECT_TRUE(matches_reference(a.map, "captum_saliency_noabs"));
  EXPECT_TRUE(matches_reference(a.map.abs(), "captum_saliency_abs"));
}

TEST(ReferenceParity, CaptumLayerGradCamRawAndRelu) {
  auto a = salient::gradcam(smallcnn(), reference()["input"], reference_targets(),
                            salient::GradCamOptions().layer("features.10"));
  EXPECT_TRUE(matches_reference(a.raw, "captum_layer_gradcam_raw"));
  EXPECT_TRUE(matches_reference(a.layer_map, "captum_layer_gradcam_relu"));
  EXPECT_TRUE(matches_reference(a.weights, "pgc_gradcam_weights"));
  EXPECT_TRUE(matches_reference(a.raw.squeeze(1), "pgc_gradcam_raw"));
}

TEST(ReferenceParity, SmoothGradWithTheStoredNoise) {
  const auto& ref = reference();
  at::Tensor noise = ref["smoothgrad_noise"];  // [8, B, 3, H, W], absolute
  at::Tensor seen_stdev;
  auto opts = salient::SmoothGradOptions().n_samples(noise.size(0)).noise(
      [&](int64_t s, const at::Tensor&, const at::Tensor& stdev) {
        seen_stdev = stdev;
        return noise[s];
      });
  auto a = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(), opts);
  EXPECT_TRUE(matches_reference(a.map, "smoothgrad"));
  // Our noise std (0.15 x range per input) is the one the reference used.
  EXPECT_TRUE(close(seen_stdev, ref["smoothgrad_stdevs"], 1e-6, 1e-6));
}

TEST(ReferenceParity, SmoothGradChunkedByBudgetStillMatches) {
  const auto& ref = reference();
  at::Tensor noise = ref["smoothgrad_noise"];
  auto opts = salient::SmoothGradOptions()
                  .n_samples(noise.size(0))
                  .memory_budget(3 * smallcnn().bytes_per_sample({3, 64, 64}))
                  .noise([&](int64_t s, const at::Tensor&, const at::Tensor&) { return noise[s]; });
  auto a = salient::smoothgrad(smallcnn(), ref["input"], reference_targets(), opts);
  EXPECT_TRUE(matches_reference(a.map, "smoothgrad"));
}

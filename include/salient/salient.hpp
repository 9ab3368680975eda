#pragma once
// salient: saliency maps for TorchScript image classifiers.
//
//   #include <salient/salient.hpp>
//   auto model = salient::Model::load("model.pt");
//   auto a = salient::gradcam(model, x);             // a.map: [N,1,H,W], raw
//   cv::Mat heat = salient::render::colorize(
//       salient::render::normalize(salient::render::reduce(a.map[0], salient::render::Reduce::Sum),
//                                  salient::render::Normalize::MinMax),
//       salient::render::Colormap::Jet);
#include "salient/attribution.hpp"
#include "salient/cam.hpp"
#include "salient/error.hpp"
#include "salient/explain.hpp"
#include "salient/gradient.hpp"
#include "salient/integrated_gradients.hpp"
#include "salient/memory.hpp"
#include "salient/metrics.hpp"
#include "salient/model.hpp"
#include "salient/perturbation.hpp"
#include "salient/smoothgrad.hpp"
#include "salient/target.hpp"
// io/ and render/ need OpenCV; a core-only build (SALIENT_CORE_ONLY) installs neither.
#if __has_include("salient/io.hpp") && __has_include(<opencv2/core.hpp>)
#include "salient/io.hpp"
#include "salient/render.hpp"
#endif

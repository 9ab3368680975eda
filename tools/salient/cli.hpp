#pragma once
// Shared pieces of the salient subcommands.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "salient/salient.hpp"

namespace salient {
namespace cli {

// Sets up each subcommand's options on `app`; the returned function runs it.
using Runner = std::function<int()>;
Runner add_explain(CLI::App& app);
Runner add_layers(CLI::App& app);
Runner add_demo(CLI::App& app);
Runner add_evaluate(CLI::App& app);
Runner add_batch(CLI::App& app);
Runner add_report(CLI::App& app);

// One line of an image manifest (evaluate, batch): {"image": F} or {"input": X.npy,
// "index": i}, optional "target", "box" and "mask". Fields are type-checked here; what
// needs the loaded image (box inside it, mask size) is checked by the caller.
struct ManifestEntry {
  std::string key;     // the "image" string, or "X.npy[i]"
  std::string source;  // the file to read, resolved against the manifest's folder
  int64_t index = -1;  // row of a .npy input; -1 for images
  bool index_given = false;  // a .npy of several samples needs "index": which one is not a guess
  int64_t target = -1; // -1: the predicted class
  bool has_box = false;
  Box box{};
  std::string mask;    // mask image, resolved; empty for none
  std::string where;   // "manifest:line", for errors found later
};
std::vector<ManifestEntry> read_manifest(const std::string& path);

// Writes DIR/report.html from DIR/results.jsonl and DIR/errors.jsonl (the files
// `salient batch` writes; shards' results-*-of-*.jsonl too): a self-contained page, images
// referenced relatively. Returns the number of rows.
size_t write_report(const std::string& dir);

std::vector<std::string> split(const std::string& s, char sep);

// --device: "cpu", "cuda" or "cuda:N"; the model is loaded there and every method runs there.
void add_device_option(CLI::App& app, std::string* device);
Model load_model(const std::string& path, const std::string& device);

// Calls f(object, "file:line") for each non-blank line of a JSON-lines file; an unreadable
// file or a line that is not a JSON object is an error naming the file (and line).
template <typename Json, typename F>
void for_each_json_line(const std::string& path, F f) {
  std::ifstream in(path, std::ios::binary);
  SALIENT_CHECK(in.good(), "'", path, "' not found or not readable");
  std::string line;
  int64_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(no);
    Json j;
    try {
      j = Json::parse(line);
    } catch (const std::exception& e) {
      SALIENT_FAIL(where, ": not a JSON object (", e.what(), ")");
    }
    SALIENT_CHECK(j.is_object(), where, ": not a JSON object");
    f(j, where);
  }
}
std::vector<int64_t> parse_dims(const std::string& s, const char* flag, const char* example);  // "3x224x224"
int64_t parse_int(const std::string& s, const char* flag);
std::vector<float> parse_floats(const std::string& s, const char* flag);
int64_t parse_bytes(const std::string& s, const char* flag);             // "1G", "512M", "1048576"

// --preset, --size HxW (replaces the preset's resize and crop), --mean, --std: the
// preprocessing flags of explain, evaluate and batch.
struct PreprocessFlags {
  std::string preset = "imagenet", size, mean, std;
};
void add_preprocess_flags(CLI::App& app, PreprocessFlags* f);
salient::io::Preprocess preprocess_from_flags(const PreprocessFlags& f);

// Creates `dir` if needed and proves that it is writable (no files left behind).
void ensure_writable_dir(const std::string& dir);

// --method: comma-separated names or "all"; checked against salient::methods().
// "all" expands later (suitable_methods needs the model and the input shape).
std::vector<std::string> parse_methods(const std::string& spec);
// CAM-like maps ([N,1,H,W], non-negative, smooth) render with min-max; gradient-like ones
// with a percentile clip.
bool is_cam_method(const std::string& name);
// The line that says which layer CAM methods use when --layer is not given, naming the
// modules that cannot be chosen (run inside control flow, or never called): the default
// may then be shallower than the user expects.
std::string default_cam_layer_note(const salient::Model& model, const std::vector<int64_t>& shape);

// The method flags shared by explain and demo; each sets the ExplainSettings field of the
// same name, unset flags keep the method's default.
struct MethodFlags {
  std::string layer, score, integration, baseline, base, memory_budget = "1G", precision = "float32";
  int64_t n_steps = 0, samples = 0, window = 0, stride = 0, masks = 0, cell = 0;
  double noise_level = 0, keep = 0, top_k = 0;
  uint64_t seed = 0;
  bool gaussian = false;
  std::map<std::string, CLI::Option*> given;
};
void add_method_flags(CLI::App& app, MethodFlags* f);
// `--baseline FILE.npy` is read here.
salient::ExplainSettings method_settings(const MethodFlags& f);
// The parameters each method ran with, for summary.json.
nlohmann::json method_params(const std::string& name, const salient::ExplainSettings& s, const std::string& layer,
                             bool layer_auto);

struct RenderSettings {
  salient::render::Colormap colormap = salient::render::Colormap::Jet;
  salient::render::Reduce reduce = salient::render::Reduce::MaxAbs;
  double percentile = 99.5;
  double alpha = 0.5;
};
// The 2-D [0,1] view of one sample's map, and its overlay on the image.
cv::Mat unit_map(const at::Tensor& sample_map, bool cam, const RenderSettings& r);
cv::Mat overlay_map(const cv::Mat& image, const at::Tensor& sample_map, bool cam, const RenderSettings& r);

std::string label_of(const std::vector<std::string>& labels, int64_t k);
// A panel's caption: "predicted: LABEL (NN%)   target: LABEL".
std::string panel_caption(const std::vector<std::string>& labels, int64_t predicted, double probability,
                          int64_t target);

}  // namespace cli
}  // namespace salient

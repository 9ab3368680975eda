// salient: saliency maps for TorchScript image classifiers, from the command line.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <opencv2/core/utils/logger.hpp>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli.hpp"
#include "salient/memory.hpp"

int main(int argc, char** argv) {
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  CLI::App app{"salient: which pixels made an image classifier decide what it decided"};
  app.require_subcommand(1);
  app.fallthrough();  // global options such as --threads also after the subcommand
  app.set_version_flag("--version", "salient 0.1.0");
  int threads = 0;
  app.add_option("--threads", threads,
                 "CPU threads for LibTorch (default: OMP_NUM_THREADS if set, else all CPUs)");
  std::vector<std::pair<CLI::App*, salient::cli::Runner>> commands;
  auto add = [&](const char* name, const char* help, salient::cli::Runner (*setup)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    commands.emplace_back(sub, setup(*sub));
  };
  add("explain", "Explain the predictions of a TorchScript model on images or a tensor",
      salient::cli::add_explain);
  add("layers", "List a model's layers with their output shapes", salient::cli::add_layers);
  add("evaluate", "Measure methods: deletion/insertion AUC, pointing game, sanity checks",
      salient::cli::add_evaluate);
  add("batch", "Explain every image of a folder or manifest: resumable, shardable, with an HTML report",
      salient::cli::add_batch);
  add("report", "Write DIR/report.html from a batch run's results", salient::cli::add_report);
  add("demo", "Explain the bundled demo model on its sample images", salient::cli::add_demo);
  // CLI11 answers a misspelt command with "A subcommand is required": say which word it was.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (auto& c : commands) {
      known = known || c.first->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + c.first->get_name();
    }
    if (!known) {
      std::cerr << "salient: error: unknown command '" << argv[1] << "'; use " << names << "\n";
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  // LibTorch's own default can be a single thread on virtual machines.
  if (threads <= 0 && std::getenv("OMP_NUM_THREADS") == nullptr)
    threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads > 0) at::set_num_threads(threads);
  // Every forward frees and re-allocates its activations: kept in the heap, they are not
  // faulted in again on each pass (3.4x faster `evaluate` on a 2-core VM, README Speed).
  salient::retain_freed_memory();
  try {
    for (auto& c : commands)
      if (c.first->parsed()) return c.second();
  } catch (const salient::Error& e) {
    std::cerr << "salient: error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "salient: internal error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "salient: internal error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

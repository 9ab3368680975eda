// salient batch in practice: broken images reported with their reasons while the rest is
// explained, resuming after a kill gives the outputs of an uninterrupted run, shards
// merge by concatenation, bad manifest entries fail alone.
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "helpers.hpp"

using namespace testing_salient;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string demo_model() { return std::string(SALIENT_SOURCE_DIR) + "/models/demo/fashion96.pt"; }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void spit(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

std::vector<json> lines_of(const fs::path& p) {
  std::vector<json> v;
  std::ifstream f(p);
  std::string l;
  while (std::getline(f, l))
    if (!l.empty()) v.push_back(json::parse(l));
  return v;
}

// Equal records, floats within `tol`: a shard batches other images together, and oneDNN's
// kernels for another batch size round differently on some CPUs (AVX-512 here).
::testing::AssertionResult same_records(const json& a, const json& b, double tol, const std::string& at = "") {
  if (a.is_number_float() || b.is_number_float()) {
    if (a.is_number() && b.is_number() && std::abs(a.get<double>() - b.get<double>()) <= tol)
      return ::testing::AssertionSuccess();
  } else if (a.is_object() && b.is_object() && a.size() == b.size()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key())) return ::testing::AssertionFailure() << at << "/" << it.key() << " missing";
      auto r = same_records(it.value(), b[it.key()], tol, at + "/" + it.key());
      if (!r) return r;
    }
    return ::testing::AssertionSuccess();
  } else if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i) {
      auto r = same_records(a[i], b[i], tol, at + "/" + std::to_string(i));
      if (!r) return r;
    }
    return ::testing::AssertionSuccess();
  } else if (a == b) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << at << ": " << a.dump() << " vs " << b.dump();
}

// A small picture: a bright square at a random place on a dark noisy ground.
cv::Mat picture(std::mt19937& rng, int size = 40) {
  cv::Mat m(size, size, CV_8UC3);
  cv::randu(m, cv::Scalar::all(0), cv::Scalar::all(60));
  const int s = size / 3, x = static_cast<int>(rng() % (size - s)), y = static_cast<int>(rng() % (size - s));
  m(cv::Rect(x, y, s, s)).setTo(cv::Scalar(230, 220, 200));
  return m;
}

std::string encode(const std::string& ext, const cv::Mat& m) {
  std::vector<uchar> buf;
  cv::imencode(ext, m, buf);
  return std::string(buf.begin(), buf.end());
}

// Broken inputs, one kind per entry: name -> bytes.
std::vector<std::pair<std::string, std::string>> broken_kinds(std::mt19937& rng) {
  std::string jpg = encode(".jpg", picture(rng)), png = encode(".png", picture(rng));
  std::string bad_zlib = png;
  for (size_t i = png.size() / 2; i < png.size() / 2 + 16; ++i) bad_zlib[i] = static_cast<char>(bad_zlib[i] ^ 0x5a);
  std::string noise = "\xff\xd8\xff";
  for (int i = 0; i < 500; ++i) noise += static_cast<char>(rng() & 0xff);
  return {
      {"truncated.jpg", jpg.substr(0, jpg.size() * 6 / 10)},
      {"truncated.png", png.substr(0, png.size() / 2)},
      {"empty.png", ""},
      {"text.png", "this is a text file with a .png name\n"},
      {"tiny.png", encode(".png", cv::Mat(1, 1, CV_8UC3, cv::Scalar(9, 9, 9)))},
      {"corrupt-data.png", bad_zlib},
      {"garbage.jpg", noise},
  };
}

struct ImageSet {
  size_t valid = 0, broken = 0;
  std::map<std::string, std::string> kind_of;  // broken file key -> kind
};

// `valid` good pictures (PNG and JPEG, in subfolders, some unusual but readable: 16-bit,
// gray, RGBA, CMYK, upper-case extension, a hostile name) and `broken` bad ones cycling
// through the kinds; with `huge`, one 8000x8000 image over the pixel limit.
ImageSet make_images(const fs::path& dir, size_t valid, size_t broken, bool huge) {
  std::mt19937 rng(11);
  ImageSet set;
  for (size_t i = 0; i < valid; ++i) {
    const std::string sub = "class" + std::to_string(i % 3) + "/";
    const std::string stem = sub + "img" + std::to_string(i);
    cv::Mat m = picture(rng);
    switch (i % 10) {
      case 1: spit(dir / (stem + ".jpg"), encode(".jpg", m)); break;
      case 2: { cv::Mat m16; m.convertTo(m16, CV_16UC3, 257.0); spit(dir / (stem + "-16bit.png"), encode(".png", m16)); break; }
      case 3: { cv::Mat g; cv::cvtColor(m, g, cv::COLOR_BGR2GRAY); spit(dir / (stem + "-gray.png"), encode(".png", g)); break; }
      case 4: { cv::Mat a; cv::cvtColor(m, a, cv::COLOR_BGR2BGRA); spit(dir / (stem + "-rgba.png"), encode(".png", a)); break; }
      case 5: spit(dir / (stem + ".JPG"), encode(".jpg", m)); break;
      case 6:
        if (i == 6) {
          spit(dir / (sub + "cmyk.jpg"), slurp(data("images/cmyk.jpg")));
          break;
        }
        [[fallthrough]];
      default: spit(dir / (stem + ".png"), encode(".png", m));
    }
  }
  if (valid > 0) {
    fs::remove(dir / "class0" / "img0.png");
    spit(dir / "class0" / "<img src=x onerror=alert(1)>.png", encode(".png", picture(rng)));
  }
  set.valid = valid;
  auto kinds = broken_kinds(rng);
  for (size_t i = 0; i < broken; ++i) {
    const auto& k = kinds[i % kinds.size()];
    const std::string key = "broken/" + std::to_string(i) + "-" + k.first;
    spit(dir / key, k.second);
    set.kind_of[key] = k.first;
  }
  set.broken = broken;
  if (huge) {
    const std::string key = "broken/huge.png";
    cv::Mat big(8000, 8000, CV_8UC3, cv::Scalar(40, 80, 120));
    spit(dir / key, encode(".png", big));
    set.kind_of[key] = "huge.png";
    ++set.broken;
  }
  return set;
}

std::string batch_args(const fs::path& images, const fs::path& out) {
  return "batch --model " + demo_model() + " --images '" + images.string() + "' --preset none --size 96x96 " +
         "--methods gradcam,vanilla --out '" + out.string() + "' --threads 2";
}

size_t count_files(const fs::path& dir, const std::string& ext) {
  size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ext) ++n;
  return n;
}

size_t count_temporaries(const fs::path& dir) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) ++n;
  return n;
}

}  // namespace

TEST(Batch, ALinkWhoseTargetIsGoneIsReportedNotSkipped) {
  const fs::path root = temp_dir("batch_dangling");
  fs::create_directories(root / "images");
  std::mt19937 rng(3);
  spit(root / "images" / "good.png", encode(".png", picture(rng)));
  fs::create_symlink(root / "moved-away.png", root / "images" / "gone.png");
  const fs::path out = root / "out";
  CliRun r = salient_cli(batch_args(root / "images", out));
  EXPECT_EQ(r.code, 1) << r.out;
  auto errors = lines_of(out / "errors.jsonl");
  ASSERT_EQ(errors.size(), 1u) << r.out;
  EXPECT_EQ(errors[0]["key"], "gone.png");
  EXPECT_NE(errors[0]["reason"].get<std::string>().find("not found"), std::string::npos) << errors[0].dump();
  EXPECT_EQ(lines_of(out / "results.jsonl").size(), 1u);
}

TEST(Batch, BrokenImagesAreReportedWithDistinctReasonsTheRestExplainedAndARerunSkipsAll) {
  // CI size; SALIENT_BATCH_IMAGES=1000 runs the full-size check (950 good, 50 broken).
  const char* env = std::getenv("SALIENT_BATCH_IMAGES");
  const size_t total = env ? static_cast<size_t>(std::atoi(env)) : 120;
  const size_t broken = std::max<size_t>(8, total / 20) - 1;  // plus the huge one
  const fs::path root = temp_dir("batch_broken");
  ImageSet set = make_images(root / "images", total - broken - 1, broken, true);
  ASSERT_EQ(set.valid + set.broken, total);
  const fs::path out = root / "out";
  CliRun r = salient_cli(batch_args(root / "images", out) + " --batch-size auto --jobs 2");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.last_line(), "done " + std::to_string(set.valid) + ", failed " + std::to_string(set.broken) +
                               ", skipped 0; reasons in " + (out / "errors.jsonl").string())
      << r.out;
  auto results = lines_of(out / "results.jsonl");
  auto errors = lines_of(out / "errors.jsonl");
  EXPECT_EQ(results.size(), set.valid);
  ASSERT_EQ(errors.size(), set.broken);
  // Every kind of breakage has its own reason; each error names its file.
  std::map<std::string, std::string> reason_of_kind;
  for (const auto& e : errors) {
    const std::string key = e["key"], reason = e["reason"];
    ASSERT_TRUE(set.kind_of.count(key)) << key << " should not have failed: " << reason;
    std::string generic = reason;
    const std::string src = e["source"];
    for (size_t p; (p = generic.find(src)) != std::string::npos;) generic.erase(p, src.size());
    reason_of_kind[set.kind_of[key]] = generic;
  }
  std::set<std::string> distinct;
  for (const auto& kv : reason_of_kind) distinct.insert(kv.second);
  EXPECT_EQ(distinct.size(), reason_of_kind.size()) << "two kinds share a reason";
  EXPECT_EQ(reason_of_kind.size(), 8u);
  EXPECT_NE(reason_of_kind["tiny.png"].find("smaller than --min-side"), std::string::npos);
  EXPECT_NE(reason_of_kind["huge.png"].find("over --max-pixels"), std::string::npos);
  // Nothing lost: every good image has its maps, overlays, input and panel.
  std::set<std::string> keys;
  for (const auto& res : results) {
    keys.insert(res["key"].get<std::string>());
    for (const char* f : {"input", "panel"}) EXPECT_TRUE(fs::exists(out / res[f].get<std::string>())) << res.dump();
    for (const char* m : {"gradcam", "vanilla"}) {
      EXPECT_TRUE(fs::exists(out / res["methods"][m]["map"].get<std::string>()));
      EXPECT_TRUE(fs::exists(out / res["methods"][m]["overlay"].get<std::string>()));
    }
  }
  EXPECT_EQ(keys.size(), set.valid);
  EXPECT_TRUE(keys.count("class0/<img src=x onerror=alert(1)>.png"));
  EXPECT_TRUE(keys.count("class0/cmyk.jpg"));
  EXPECT_EQ(count_files(out / "maps", ".npy"), 2 * set.valid);
  // The second run does nothing and says so; the failures still set the exit code.
  CliRun again = salient_cli(batch_args(root / "images", out));
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_EQ(again.last_line(), "done 0, failed 0, skipped " + std::to_string(total) + " (" +
                                   std::to_string(set.broken) + " of them failed before); reasons in " +
                                   (out / "errors.jsonl").string());
  EXPECT_EQ(lines_of(out / "results.jsonl").size(), set.valid);
  if (!env) fs::remove_all(root);
}

TEST(Batch, AKilledRunResumesToTheOutputsOfAnUninterruptedOne) {
  const fs::path root = temp_dir("batch_resume");
  make_images(root / "images", 60, 0, false);
  CliRun full = salient_cli(batch_args(root / "images", root / "full") + " --batch-size 4 --quiet");
  ASSERT_EQ(full.code, 0) << full.out;

  // Kill -9 at a random moment once some images are done, then Ctrl-C a resumed run.
  const fs::path out = root / "killed";
  std::mt19937 rng(static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  const size_t kill_after = 5 + rng() % 30;
  for (int signal_no : {SIGKILL, SIGINT}) {
    const std::string cmd = "exec " + std::string(SALIENT_CLI) + " " + batch_args(root / "images", out) +
                            " --batch-size 4 --quiet > /dev/null 2>&1";
    pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const size_t before = count_files(out / "records", ".json");
    const size_t want = before + (signal_no == SIGKILL ? kill_after : 8);
    auto t0 = std::chrono::steady_clock::now();
    while (count_files(out / "records", ".json") < want &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pid, signal_no);
    int status = 0;
    waitpid(pid, &status, 0);
    if (signal_no == SIGINT) {
      ASSERT_TRUE(WIFEXITED(status)) << "Ctrl-C should end the run cleanly";
      EXPECT_EQ(WEXITSTATUS(status), 130);
    }
    EXPECT_LT(count_files(out / "records", ".json"), 60u) << "the run finished before the signal";
  }
  CliRun resumed = salient_cli(batch_args(root / "images", out) + " --batch-size 4 --quiet");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_EQ(count_temporaries(out), 0u);
  // Same results and byte-identical maps and pictures.
  EXPECT_EQ(slurp(out / "results.jsonl"), slurp(root / "full" / "results.jsonl"));
  for (const auto& res : lines_of(root / "full" / "results.jsonl")) {
    for (const char* m : {"gradcam", "vanilla"})
      for (const char* f : {"map", "overlay"}) {
        const std::string rel = res["methods"][m][f];
        EXPECT_EQ(slurp(out / rel), slurp(root / "full" / rel)) << rel;
      }
    EXPECT_EQ(slurp(out / res["panel"].get<std::string>()), slurp(root / "full" / res["panel"].get<std::string>()));
  }
  fs::remove_all(root);
}

TEST(Batch, ShardsSplitDeterministicallyAndMergeByConcatenation) {
  const fs::path root = temp_dir("batch_shards");
  make_images(root / "images", 25, 0, false);
  CliRun whole = salient_cli(batch_args(root / "images", root / "whole") + " --quiet");
  ASSERT_EQ(whole.code, 0) << whole.out;
  std::string merged;
  for (int i = 0; i < 3; ++i) {
    CliRun part = salient_cli(batch_args(root / "images", root / "sharded") + " --quiet --shard " + std::to_string(i) + "/3");
    ASSERT_EQ(part.code, 0) << part.out;
    EXPECT_EQ(part.last_line(), "done " + std::to_string(i == 0 ? 9 : 8) + ", failed 0, skipped 0");
    merged += slurp(root / "sharded" / ("results-" + std::to_string(i) + "-of-3.jsonl"));
  }
  auto by_key = [](const std::string& text) {
    std::map<std::string, json> v;
    std::istringstream is(text);
    for (std::string l; std::getline(is, l);)
      if (!l.empty()) {
        json j = json::parse(l);
        v[j["key"].get<std::string>()] = j;
      }
    return v;
  };
  // Each line once, the same records as the whole run's (probabilities to float rounding).
  EXPECT_EQ(std::count(merged.begin(), merged.end(), '\n'), 25);
  auto shards = by_key(merged), whole_records = by_key(slurp(root / "whole" / "results.jsonl"));
  ASSERT_EQ(shards.size(), 25u);
  ASSERT_EQ(whole_records.size(), 25u);
  for (const auto& kv : whole_records) {
    ASSERT_TRUE(shards.count(kv.first)) << kv.first;
    EXPECT_TRUE(same_records(shards[kv.first], kv.second, 1e-5)) << kv.first;
  }
  CliRun bad = salient_cli(batch_args(root / "images", root / "x") + " --shard 3/3");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("--shard i/n needs 0 <= i < n"), std::string::npos) << bad.out;
  fs::remove_all(root);
}

TEST(Batch, ManifestTargetsApplyAndABadEntryFailsAloneInItsBatch) {
  const fs::path root = temp_dir("batch_manifest");
  at::manual_seed(1);
  salient::io::write_npy((root / "x.npy").string(), at::rand({5, 3, 96, 96}));
  salient::io::write_npy((root / "y.npy").string(), at::rand({2, 3, 96, 96}));
  std::ofstream(root / "m.jsonl") << "{\"input\": \"x.npy\", \"index\": 0, \"target\": 3}\n"
                                  << "{\"input\": \"x.npy\", \"index\": 1}\n"
                                  << "{\"input\": \"x.npy\", \"index\": 2, \"target\": 99}\n"
                                  << "{\"input\": \"x.npy\", \"index\": 7}\n"
                                  << "{\"input\": \"x.npy\", \"index\": 4, \"target\": 5}\n"
                                  << "{\"input\": \"y.npy\"}\n";  // which of its 2?
  const std::string args = "batch --model " + demo_model() + " --data '" + (root / "m.jsonl").string() +
                           "' --methods gradcam --batch-size 8 --quiet --out '" + (root / "out").string() + "'";
  CliRun r = salient_cli(args);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.last_line(), "done 3, failed 3, skipped 0; reasons in " + (root / "out" / "errors.jsonl").string());
  auto results = lines_of(root / "out" / "results.jsonl");
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]["key"], "x.npy[0]");
  EXPECT_EQ(results[0]["target"], 3);
  EXPECT_EQ(results[2]["target"], 5);
  auto errors = lines_of(root / "out" / "errors.jsonl");
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_NE(errors[0]["reason"].get<std::string>().find("99"), std::string::npos) << errors[0].dump();
  EXPECT_NE(errors[1]["reason"].get<std::string>().find("out of range"), std::string::npos) << errors[1].dump();
  EXPECT_NE(errors[2]["reason"].get<std::string>().find("y.npy' holds 2 samples: say which with \"index\""),
            std::string::npos)
      << errors[2].dump();
  // A malformed manifest is the user's file, not an image: one line, exit 2.
  std::ofstream(root / "bad.jsonl") << "{\"input\": \"x.npy\"}\nnot json\n";
  CliRun bad = salient_cli("batch --model " + demo_model() + " --data '" + (root / "bad.jsonl").string() + "' --out '" +
                (root / "out2").string() + "'");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("bad.jsonl:2: not a JSON object"), std::string::npos) << bad.out;
  fs::remove_all(root);
}

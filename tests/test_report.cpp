// The HTML report of salient batch: it reads the run's records (shards too), stays inert
// whatever the file names and error texts contain, and really renders and pages in a
// browser (headless Chromium when installed).
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "helpers.hpp"

using namespace testing_salient;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kHostileKey = "<img src=x onerror=alert(1)>.png";
const char* kHostileReason = "</script><script>alert(2)</script>";
const char* kChromium = "/usr/bin/chromium";

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

void square(const std::string& path, int b, int g, int r) {
  cv::Mat m(32, 32, CV_8UC3, cv::Scalar(b, g, r));
  cv::rectangle(m, cv::Rect(8, 8, 16, 16), cv::Scalar(255 - b, 255 - g, 255 - r), cv::FILLED);
  ASSERT_TRUE(cv::imwrite(path, m)) << path;
}

// A batch output folder: 120 images over results.jsonl and a shard (2 methods, metrics on
// every other image), one image with a hostile key whose input file name needs
// percent-encoding, and 2 errors (one hostile reason) over errors.jsonl and a shard.
// Image i has probability 0.2 + 0.005 i and predicted class i % 5.
std::string batch_fixture(const std::string& name) {
  const std::string dir = temp_dir(name);
  for (const char* sub : {"inputs", "panels", "overlays"}) fs::create_directories(dir + "/" + sub);
  std::ofstream results(dir + "/results.jsonl"), shard(dir + "/results-1-of-2.jsonl");
  const char* labels[] = {"cat", "dog", "dress", "sneaker", "bag"};
  for (int i = 0; i < 120; ++i) {
    const std::string id = "img" + std::to_string(i);
    fs::create_directories(dir + "/overlays/" + id);
    square(dir + "/inputs/" + id + ".png", (i * 37) % 256, (i * 91) % 256, (i * 53) % 256);
    square(dir + "/overlays/" + id + "/gradcam.png", 255, (i * 7) % 256, 0);
    square(dir + "/overlays/" + id + "/vanilla.png", 0, (i * 5) % 256, 255);
    char key[64];
    std::snprintf(key, sizeof(key), "class%d/img%03d.png", i % 5, i);
    json r = {{"key", key},
              {"source", "/data/" + std::string(key)},
              {"input", "inputs/" + id + ".png"},
              {"panel", "panels/" + id + ".png"},
              {"predicted", i % 5},
              {"probability", 0.2 + 0.005 * i},
              {"target", i % 7 == 0 ? (i + 1) % 5 : i % 5}};
    if (i % 5 != 4) r["predicted_label"] = labels[i % 5];
    json gradcam = {{"overlay", "overlays/" + id + "/gradcam.png"}, {"map", "maps/" + id + "/gradcam.npy"}};
    json vanilla = {{"overlay", "overlays/" + id + "/vanilla.png"}, {"map", "maps/" + id + "/vanilla.npy"}};
    if (i % 2 == 0) {
      gradcam["metrics"] = {{"deletion", 0.01 * (i % 50)}, {"insertion", 0.5 + 0.001 * i}};
      vanilla["metrics"] = {{"deletion", 0.3}, {"insertion", 0.4}};
    }
    r["methods"] = {{"gradcam", gradcam}, {"vanilla", vanilla}};
    (i < 100 ? results : shard) << r.dump() << "\n";
  }
  // Sorts first by key; its input name needs percent-encoding to load at all.
  square(dir + "/inputs/odd name #1?.png", 200, 30, 200);
  fs::create_directories(dir + "/overlays/hostile");
  square(dir + "/overlays/hostile/gradcam.png", 255, 0, 0);
  square(dir + "/overlays/hostile/vanilla.png", 0, 0, 255);
  json hostile = {{"key", kHostileKey},
                  {"source", std::string("/data/") + kHostileKey},
                  {"input", "inputs/odd name #1?.png"},
                  {"panel", "panels/hostile.png"},
                  {"predicted", 2},
                  {"probability", 0.5},
                  {"predicted_label", "<b>dress</b>"},
                  {"methods",
                   {{"gradcam", {{"overlay", "overlays/hostile/gradcam.png"}}},
                    {"vanilla", {{"overlay", "overlays/hostile/vanilla.png"}}}}}};
  results << hostile.dump() << "\n";
  results.close();
  shard.close();
  write_text(dir + "/errors.jsonl",
             json({{"key", "bad.png"}, {"source", "/data/bad.png"}, {"reason", "truncated JPEG (no end-of-image marker)"}})
                     .dump() + "\n");
  write_text(dir + "/errors-1-of-2.jsonl",
             json({{"key", "evil.png"}, {"source", "/data/evil.png"}, {"reason", kHostileReason}}).dump() + "\n");
  return dir;
}

// The JSON embedded in the page, parsed back.
json embedded_data(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"salient-data\">";
  size_t a = html.find(open);
  if (a == std::string::npos) return nullptr;
  a += open.size();
  size_t b = html.find("</script>", a);
  if (b == std::string::npos) return nullptr;
  return json::parse(html.substr(a, b - a));
}

bool require_chromium() {
  const char* v = std::getenv("SALIENT_REQUIRE_CHROMIUM");
  return v && std::string(v) == "1";
}

// Headless Chromium with a fresh profile and nothing that reaches the network; `what` is
// e.g. "--dump-dom" (its stdout goes to `stdout_file`). Returns the exit status.
int chromium(const std::string& work, const std::string& what, const std::string& url, const std::string& stdout_file) {
  static int n = 0;
  const std::string profile = work + "/chromium-profile-" + std::to_string(n++);
  fs::create_directories(profile);
  const std::string cmd = std::string("timeout 60 ") + kChromium +
                          " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
                          " --disable-component-update --disable-sync --user-data-dir='" + profile + "'"
                          " --virtual-time-budget=10000 " + what + " '" + url + "' > '" + stdout_file + "' 2>> '" +
                          work + "/chromium.log'";
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The dumped DOM without its script elements (the embedded data would match any search).
std::string rendered(std::string dom) {
  for (size_t a; (a = dom.find("<script")) != std::string::npos;) {
    size_t b = dom.find("</script>", a);
    dom.erase(a, b == std::string::npos ? std::string::npos : b + 9 - a);
  }
  return dom;
}

int data_attr(const std::string& dom, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(dom, m, std::regex(name + "=\"([0-9]+)\""))) return -1;
  return std::stoi(m[1]);
}

}  // namespace

TEST(Report, HostileStringsStayInertInTheHtmlAndRoundTripExactly) {
  const std::string dir = batch_fixture("report_inert");
  CliRun r = salient_cli("report --out " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "wrote " + dir + "/report.html (121 images, 2 errors)\n");
  const std::string html = read_text(dir + "/report.html");
  ASSERT_FALSE(html.empty());
  EXPECT_EQ(html.find("</script><script>alert"), std::string::npos);
  EXPECT_EQ(html.find("<img src=x"), std::string::npos);
  // Exactly the page's own two script elements end: no string closed one early.
  EXPECT_EQ(count_of(html, "</script"), 2u);
  EXPECT_EQ(count_of(html, "<script"), 2u);
  // No network: nothing absolute, no CDN, no font.
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("innerHTML"), std::string::npos);
  EXPECT_NE(html.find("Content-Security-Policy"), std::string::npos);

  json d = embedded_data(html);
  ASSERT_TRUE(d.is_object());
  EXPECT_EQ(d["methods"], json({"gradcam", "vanilla"}));  // in the order batch wrote them
  EXPECT_EQ(d["metrics"].dump(), R"([["gradcam","deletion"],["gradcam","insertion"],["vanilla","deletion"],)"
                                R"(["vanilla","insertion"]])");
  ASSERT_EQ(d["rows"].size(), 121u);
  EXPECT_EQ(d["rows"][0]["k"], kHostileKey);  // sorted by key; the exact string comes back
  EXPECT_EQ(d["rows"][0]["pl"], "<b>dress</b>");
  EXPECT_EQ(d["rows"][0]["in"], "inputs/odd%20name%20%231%3F.png");
  ASSERT_EQ(d["errors"].size(), 2u);
  EXPECT_EQ(d["errors"][1]["r"], kHostileReason);
}

TEST(Report, HostileNamesRenderAsTextAndPagesLoadInHeadlessChromium) {
  if (!fs::exists(kChromium)) {
    if (require_chromium()) FAIL() << kChromium << " is missing and SALIENT_REQUIRE_CHROMIUM=1";
    GTEST_SKIP() << kChromium << " is not installed (apt-get install chromium)";
  }
  const std::string dir = batch_fixture("report_chromium");
  CliRun r = salient_cli("report -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string page = fs::absolute(dir + "/report.html").string();
  ASSERT_TRUE(fs::exists(page));
  const std::string url = "file://" + page;

  // The first page.
  ASSERT_EQ(chromium(dir, "--dump-dom", url, dir + "/dom1.html"), 0) << read_text(dir + "/chromium.log");
  const std::string dom = rendered(read_text(dir + "/dom1.html"));
  ASSERT_FALSE(dom.empty()) << read_text(dir + "/chromium.log");
  EXPECT_EQ(data_attr(dom, "data-rendered"), 50) << dom.substr(0, 2000);
  EXPECT_NE(dom.find("rows 1\u201350 of 121"), std::string::npos);
  EXPECT_NE(dom.find("121 images, 2 errors"), std::string::npos);
  // The hostile key is text, not an element; so is its label.
  EXPECT_NE(dom.find("&lt;img src=x onerror=alert(1)&gt;.png"), std::string::npos);
  EXPECT_EQ(dom.find("<img src=\"x\""), std::string::npos);
  EXPECT_EQ(dom.find("<img src=x"), std::string::npos);
  EXPECT_NE(dom.find("&lt;b&gt;dress&lt;/b&gt; (2)"), std::string::npos);
  EXPECT_EQ(dom.find("<b>dress</b>"), std::string::npos);
  // Overlays and percent-encoded inputs are real, lazily loaded images that loaded.
  EXPECT_NE(dom.find("src=\"overlays/img0/gradcam.png\""), std::string::npos);
  EXPECT_NE(dom.find("src=\"overlays/img0/vanilla.png\""), std::string::npos);
  EXPECT_NE(dom.find("src=\"inputs/odd%20name%20%231%3F.png\""), std::string::npos);
  EXPECT_EQ(count_of(dom, "loading=\"lazy\""), 150u);
  EXPECT_GT(data_attr(dom, "data-images-loaded"), 0) << read_text(dir + "/chromium.log");
  // The errors, as text.
  EXPECT_NE(dom.find("Errors (2)"), std::string::npos);
  EXPECT_NE(dom.find("&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(dom.find("truncated JPEG (no end-of-image marker)"), std::string::npos);

  // The last page, from the URL fragment.
  ASSERT_EQ(chromium(dir, "--dump-dom", url + "#page=3", dir + "/dom3.html"), 0);
  const std::string dom3 = rendered(read_text(dir + "/dom3.html"));
  EXPECT_EQ(data_attr(dom3, "data-rendered"), 21);
  EXPECT_NE(dom3.find("rows 101\u2013121 of 121"), std::string::npos);

  // Class 2 by confidence, low to high: 24 images plus the hostile one (p 0.5), and the
  // least confident is image 2 (p 0.21). Sorting puts the hostile row (key order first) 13th.
  ASSERT_EQ(chromium(dir, "--dump-dom", url + "#cls=2&sort=confidence-asc", dir + "/dom_cls.html"), 0);
  const std::string dom_cls = rendered(read_text(dir + "/dom_cls.html"));
  EXPECT_EQ(data_attr(dom_cls, "data-rendered"), 25);
  EXPECT_NE(dom_cls.find("filtered from 121"), std::string::npos);
  size_t first = dom_cls.find("class2/img002.png"), second = dom_cls.find("class2/img007.png");
  EXPECT_NE(first, std::string::npos);
  EXPECT_LT(first, second);
  EXPECT_EQ(dom_cls.find("class1/"), std::string::npos);

  // A screenshot for people to look at.
  const std::string shot = dir + "/report_screenshot.png";
  EXPECT_EQ(chromium(dir, "--window-size=1400,1000 --screenshot='" + shot + "'", url, dir + "/shot.out"), 0);
  ASSERT_TRUE(fs::exists(shot)) << read_text(dir + "/chromium.log");
  EXPECT_GT(fs::file_size(shot), 20000u);
  std::error_code ec;
  fs::copy_file(shot, "/tmp/report_screenshot.png", fs::copy_options::overwrite_existing, ec);
}

TEST(Report, ShardsMergeAndARetriedImageCountsOnce) {
  const std::string dir = temp_dir("report_shards");
  auto rec = [](const std::string& key, double p) {
    return json({{"key", key}, {"predicted", 1}, {"probability", p}, {"input", "inputs/" + key + ".png"}}).dump() + "\n";
  };
  write_text(dir + "/results.jsonl", rec("a", 0.1) + rec("b", 0.2));
  write_text(dir + "/results-0-of-2.jsonl", rec("c", 0.3));
  write_text(dir + "/results-1-of-2.jsonl", "\n" + rec("b", 0.9));  // a retry of b; blank lines are fine
  write_text(dir + "/results-1-of-2.jsonl.tmp.123", "{not json");   // a shard being written: not read
  write_text(dir + "/errors.jsonl", json({{"key", "c"}, {"reason", "out of memory"}}).dump() + "\n" +
                                        json({{"key", "d"}, {"reason", "not an image"}}).dump() + "\n");
  write_text(dir + "/errors-0-of-2.jsonl", json({{"key", "e"}, {"reason", "empty file"}}).dump() + "\n");
  CliRun r = salient_cli("report --out " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "wrote " + dir + "/report.html (3 images, 2 errors)\n");
  json d = embedded_data(read_text(dir + "/report.html"));
  ASSERT_EQ(d["rows"].size(), 3u);
  EXPECT_EQ(d["rows"][1]["k"], "b");
  EXPECT_DOUBLE_EQ(d["rows"][1]["pp"].get<double>(), 0.9);  // the later record wins
  EXPECT_EQ(d["methods"], json::array());
}

TEST(Report, AnErrorsOnlyRunStillGetsAPage) {
  const std::string dir = temp_dir("report_errors_only");
  write_text(dir + "/errors.jsonl", json({{"key", "x.png"}, {"reason", "not an image"}}).dump() + "\n");
  CliRun r = salient_cli("report --out " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "wrote " + dir + "/report.html (0 images, 1 errors)\n");
}

TEST(Report, MissingResultsIsOneClearError) {
  const std::string dir = temp_dir("report_missing");
  CliRun r = salient_cli("report --out " + dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "salient: error: no results in " + dir + ": run salient batch first\n");
  EXPECT_FALSE(fs::exists(dir + "/report.html"));
  // A folder that does not exist says the same.
  r = salient_cli("report --out " + dir + "/nowhere");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "salient: error: no results in " + dir + "/nowhere: run salient batch first\n");
}

TEST(Report, AMalformedLineIsOneErrorNamingFileAndLine) {
  const std::string dir = temp_dir("report_malformed");
  const std::string good = json({{"key", "a.png"}, {"predicted", 1}}).dump() + "\n";
  struct Case {
    std::string file, text, expected;
  } cases[] = {
      {"results.jsonl", good + "{\"key\": \"b.png\", \"predicted\": 1\n", "results.jsonl:2: not a JSON object"},
      {"results.jsonl", good + "[1, 2]\n", "results.jsonl:2: not a JSON object"},
      {"results.jsonl", good + "{\"predicted\": 1}\n", "results.jsonl:2: missing \"key\""},
      {"results.jsonl", good + "{\"key\": \"b\", \"probability\": \"high\"}\n",
       "results.jsonl:2: \"probability\" must be a number"},
      {"results.jsonl", good + "{\"key\": \"b\", \"methods\": {\"gradcam\": {\"metrics\": {\"deletion\": \"x\"}}}}\n",
       "results.jsonl:2: method \"gradcam\": metrics: \"deletion\" must be a number"},
      {"results-0-of-2.jsonl", "\n\n{\"key\": 7}\n", "results-0-of-2.jsonl:3: \"key\" must be a string"},
      {"errors.jsonl", "nonsense\n", "errors.jsonl:1: not a JSON object"},
  };
  for (const auto& c : cases) {
    for (const auto& e : fs::directory_iterator(dir)) fs::remove(e.path());
    if (c.file != "results.jsonl") write_text(dir + "/results.jsonl", good);
    write_text(dir + "/" + c.file, c.text);
    CliRun r = salient_cli("report --out " + dir);
    EXPECT_EQ(r.code, 2) << c.text;
    EXPECT_EQ(r.out.rfind("salient: error: " + dir + "/" + c.expected, 0), 0u) << "expected '" << c.expected
                                                                                << "' in: " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    EXPECT_FALSE(fs::exists(dir + "/report.html")) << c.text;
  }
}

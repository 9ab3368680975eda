#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>

#include "helpers.hpp"

using namespace testing_salient;
namespace io = salient::io;
namespace render = salient::render;

namespace {


void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

cv::Mat gradient_image(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(uchar(x * 7), uchar(y * 5), uchar((x + y) * 3));
  return m;
}

}  // namespace

TEST(Npy, RoundTripKeepsShapeAndValues) {
  std::string dir = temp_dir("npy");
  at::Tensor t = at::randn({2, 3, 4, 5});
  io::write_npy(dir + "/t.npy", t);
  at::Tensor back = io::read_npy(dir + "/t.npy");
  EXPECT_TRUE(at::equal(back, t));
  // numpy's layout: magic, version 1.0, header padded to 64 bytes.
  std::string raw = read_bytes(dir + "/t.npy");
  EXPECT_EQ(raw.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(raw.size(), 128u + 2 * 3 * 4 * 5 * 4);
  EXPECT_NE(raw.find("'shape': (2, 3, 4, 5)"), std::string::npos);
}

TEST(Npy, ReadsFloat64AsFloat32AndRejectsBadFiles) {
  std::string dir = temp_dir("npy_bad");
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string f64("\x93NUMPY\x01\x00", 8);
  f64 += char(header.size());
  f64 += char(0);
  f64 += header;
  double vals[3] = {1.5, -2.0, 3.25};
  f64.append(reinterpret_cast<const char*>(vals), sizeof(vals));
  write_bytes(dir + "/d.npy", f64);
  at::Tensor t = io::read_npy(dir + "/d.npy");
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(t, at::tensor({1.5f, -2.0f, 3.25f})));

  write_bytes(dir + "/trunc.npy", f64.substr(0, f64.size() - 4));
  EXPECT_NE(msg_of([&] { io::read_npy(dir + "/trunc.npy"); }).find("is truncated"), std::string::npos);
  write_bytes(dir + "/text.npy", "not numpy at all");
  EXPECT_NE(msg_of([&] { io::read_npy(dir + "/text.npy"); }).find("is not a .npy file"), std::string::npos);
  EXPECT_NE(msg_of([&] { io::read_npy(dir + "/missing.npy"); }).find("not found"), std::string::npos);
}

TEST(Images, PngRoundTripAndGrayRgbaSixteenBitBecomeRgb) {
  std::string dir = temp_dir("images");
  cv::Mat rgb = gradient_image(20, 30);
  io::write_png(dir + "/rgb.png", rgb);
  cv::Mat back = io::read_image(dir + "/rgb.png");
  EXPECT_EQ(cv::norm(back, rgb, cv::NORM_INF), 0);

  cv::Mat gray(10, 12, CV_8UC1, cv::Scalar(77));
  cv::imwrite(dir + "/gray.png", gray);
  cv::Mat g = io::read_image(dir + "/gray.png");
  ASSERT_EQ(g.channels(), 3);
  EXPECT_EQ(g.at<cv::Vec3b>(3, 4), cv::Vec3b(77, 77, 77));

  cv::Mat bgra(8, 8, CV_8UC4, cv::Scalar(10, 20, 30, 40));  // B, G, R, A
  cv::imwrite(dir + "/rgba.png", bgra);
  EXPECT_EQ(io::read_image(dir + "/rgba.png").at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));

  cv::Mat deep(6, 6, CV_16UC3, cv::Scalar(0, 257 * 100, 65535));
  cv::imwrite(dir + "/deep.png", deep);
  EXPECT_EQ(io::read_image(dir + "/deep.png").at<cv::Vec3b>(2, 2), cv::Vec3b(255, 100, 0));
}

TEST(Images, BadFilesGiveOneClearErrorNamingTheFile) {
  std::string dir = temp_dir("bad_images");
  cv::Mat rgb = gradient_image(32, 32);
  std::vector<uchar> png, jpg;
  cv::imencode(".png", rgb, png);
  cv::imencode(".jpg", rgb, jpg);
  write_bytes(dir + "/empty.png", "");
  write_bytes(dir + "/text.png", "this is a text file renamed to png\n");
  write_bytes(dir + "/cut.png", std::string(png.begin(), png.begin() + png.size() / 2));
  write_bytes(dir + "/cut.jpg", std::string(jpg.begin(), jpg.begin() + jpg.size() / 2));
  std::string garbled(png.begin(), png.end());
  for (size_t i = 40; i < garbled.size() - 40; ++i) garbled[i] = char(i * 31);
  write_bytes(dir + "/garbled.png", garbled);
  std::string garbled_jpg(jpg.begin(), jpg.end());
  for (size_t i = garbled_jpg.size() / 3; i < 2 * garbled_jpg.size() / 3; ++i) garbled_jpg[i] = char(i * 31);
  write_bytes(dir + "/garbled.jpg", garbled_jpg);
  std::vector<std::pair<std::string, std::string>> cases = {
      {"missing.png", "not found"},       {"empty.png", "is empty"},
      {"text.png", "is not a PNG or JPEG"}, {"cut.png", "corrupt or truncated PNG"},
      {"cut.jpg", "corrupt or truncated JPEG"}, {"garbled.png", "corrupt or truncated PNG"},
      {"garbled.jpg", "corrupt or truncated JPEG"}};
  for (const auto& c : cases) {
    std::string m = msg_of([&] { io::read_image(dir + "/" + c.first); });
    EXPECT_NE(m.find(c.second), std::string::npos) << c.first << ": " << m;
    EXPECT_NE(m.find(c.first), std::string::npos) << c.first << ": " << m;
  }
}

TEST(Preprocess, ImagenetPresetResizesCropsAndNormalises) {
  cv::Mat img(300, 400, CV_8UC3, cv::Scalar(128, 64, 32));  // RGB
  auto p = io::prepare(img, io::Preprocess::preset("imagenet"), 3);
  ASSERT_EQ(p.tensor.sizes(), (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_EQ(p.display.rows, 224);
  EXPECT_EQ(p.display.cols, 224);
  float expected[3] = {(128 / 255.f - 0.485f) / 0.229f, (64 / 255.f - 0.456f) / 0.224f,
                       (32 / 255.f - 0.406f) / 0.225f};
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(p.tensor[0][c][100][50].item<float>(), expected[c], 1e-5);
}

TEST(Preprocess, CenterCropKeepsTheMiddleAndNoneKeepsTheSize) {
  // Shorter side 256 of a 256x512 image is a no-op resize; the crop takes columns 144..367.
  cv::Mat img(256, 512, CV_8UC3, cv::Scalar(0, 0, 0));
  img.colRange(144, 368).setTo(cv::Scalar(255, 255, 255));
  auto p = io::prepare(img, io::Preprocess::preset("imagenet"), 3);
  EXPECT_EQ(cv::countNonZero(p.display.reshape(1) != 255), 0);
  auto q = io::prepare(gradient_image(20, 30), io::Preprocess::preset("none"), 3);
  EXPECT_EQ(q.tensor.sizes(), (std::vector<int64_t>{1, 3, 20, 30}));
  EXPECT_NEAR(q.tensor.max().item<float>(), 1.0f * 203 / 255, 1e-6);  // max of x*7 for x<30
}

TEST(Preprocess, GrayModelsGetOneChannelAndMismatchedMeanIsAnError) {
  io::Preprocess pre;
  pre.size_h = 8, pre.size_w = 8;
  auto p = io::prepare(gradient_image(16, 16), pre, 1);
  EXPECT_EQ(p.tensor.sizes(), (std::vector<int64_t>{1, 1, 8, 8}));
  EXPECT_EQ(p.display.channels(), 3);
  std::string m = msg_of([&] { io::prepare(gradient_image(16, 16), io::Preprocess::preset("imagenet"), 1); });
  EXPECT_NE(m.find("--mean has 3 values but the model takes 1 channel"), std::string::npos) << m;
}

TEST(Render, ReductionsOverChannels) {
  at::Tensor m = at::tensor({1.f, -3.f, 2.f, 0.f, -1.f, 4.f}).view({2, 1, 3});
  cv::Mat maxabs = render::reduce(m, render::Reduce::MaxAbs);
  cv::Mat abssum = render::reduce(m, render::Reduce::AbsSum);
  EXPECT_EQ(maxabs.at<float>(0, 0), 1.f);
  EXPECT_EQ(maxabs.at<float>(0, 1), 3.f);
  EXPECT_EQ(maxabs.at<float>(0, 2), 4.f);
  EXPECT_EQ(abssum.at<float>(0, 1), 4.f);
  EXPECT_EQ(abssum.at<float>(0, 2), 6.f);
}

TEST(Render, ConstantMapsNormaliseToZerosNotNaN) {
  cv::Mat c(5, 5, CV_32F, cv::Scalar(3.0f));
  for (auto how : {render::Normalize::MinMax, render::Normalize::Percentile}) {
    cv::Mat u = render::normalize(c, how);
    EXPECT_EQ(cv::countNonZero(u), 0);
    EXPECT_TRUE(cv::checkRange(u));
  }
  cv::Mat z = cv::Mat::zeros(4, 4, CV_32F);
  EXPECT_EQ(cv::countNonZero(render::normalize(z, render::Normalize::Percentile)), 0);
}

TEST(Render, PercentileClipsTheTail) {
  cv::Mat m(1, 1000, CV_32F);
  for (int i = 0; i < 1000; ++i) m.at<float>(0, i) = float(i);
  cv::Mat u = render::normalize(m, render::Normalize::Percentile, 99.0);
  // The 99th percentile of 0..999 is 989 (nearest rank): 989 and above map to 1.
  EXPECT_FLOAT_EQ(u.at<float>(0, 989), 1.0f);
  EXPECT_FLOAT_EQ(u.at<float>(0, 999), 1.0f);
  EXPECT_NEAR(u.at<float>(0, 500), 500.0f / 989.0f, 1e-6);
  cv::Mat mm = render::normalize(m, render::Normalize::MinMax);
  EXPECT_FLOAT_EQ(mm.at<float>(0, 999), 1.0f);
  EXPECT_FLOAT_EQ(mm.at<float>(0, 0), 0.0f);
}

TEST(Render, ColormapsRunFromLowToHighAndOverlayBlends) {
  cv::Mat u(1, 2, CV_32F);
  u.at<float>(0, 0) = 0.f;
  u.at<float>(0, 1) = 1.f;
  cv::Mat jet = render::colorize(u, render::Colormap::Jet);
  EXPECT_EQ(jet.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 128));  // RGB: dark blue
  EXPECT_EQ(jet.at<cv::Vec3b>(0, 1), cv::Vec3b(128, 0, 0));  // dark red
  cv::Mat vir = render::colorize(u, render::Colormap::Viridis);
  EXPECT_GT(vir.at<cv::Vec3b>(0, 1)[0], 200);  // viridis ends yellow (R high)
  EXPECT_GT(vir.at<cv::Vec3b>(0, 0)[2], vir.at<cv::Vec3b>(0, 0)[1]);  // starts purple-blue
  cv::Mat img(1, 2, CV_8UC3, cv::Scalar(100, 100, 100));
  EXPECT_EQ(cv::norm(render::overlay(img, jet, 0.0), img, cv::NORM_INF), 0);
  EXPECT_EQ(cv::norm(render::overlay(img, jet, 1.0), jet, cv::NORM_INF), 0);
  cv::Mat half = render::overlay(img, jet, 0.5);
  EXPECT_EQ(half.at<cv::Vec3b>(0, 0), cv::Vec3b(50, 50, 114));
}

TEST(Render, PanelPlacesEveryCellAtTheRequestedSize) {
  cv::Mat a(96, 96, CV_8UC3, cv::Scalar(255, 0, 0)), b(96, 96, CV_8UC3, cv::Scalar(0, 0, 255));
  cv::Mat p = render::panel({{"input", a}, {"gradcam", b}}, "predicted: Bag", 192);
  EXPECT_EQ(p.cols, 8 + 2 * (192 + 8));
  EXPECT_EQ(p.rows, 28 + 24 + 192 + 8);
  EXPECT_EQ(p.at<cv::Vec3b>(28 + 24 + 100, 8 + 100), cv::Vec3b(255, 0, 0));
  EXPECT_EQ(p.at<cv::Vec3b>(28 + 24 + 100, 8 + 200 + 100), cv::Vec3b(0, 0, 255));
}

TEST(Render, PanelWrapsCellsIntoRowsWithTheCaptionOnTop) {
  cv::Mat a(96, 96, CV_8UC3, cv::Scalar(255, 0, 0)), b(96, 96, CV_8UC3, cv::Scalar(0, 0, 255));
  std::vector<render::Cell> cells(5, {"m", a});
  cells[3].image = b;  // first cell of the second row
  cv::Mat p = render::panel(cells, "caption", 96, 3);
  EXPECT_EQ(p.cols, 8 + 3 * (96 + 8));
  EXPECT_EQ(p.rows, (28 + 24 + 96 + 8) + (24 + 96 + 8));
  EXPECT_EQ(p.at<cv::Vec3b>(28 + 24 + 96 + 8 + 24 + 50, 8 + 50), cv::Vec3b(0, 0, 255));
  EXPECT_EQ(p.at<cv::Vec3b>(28 + 24 + 96 + 8 + 24 + 50, 8 + 2 * 104 + 50), cv::Vec3b(255, 255, 255));  // no 6th cell
}

TEST(Render, PanelTextStaysInsideThePanelAndItsCells) {
  cv::Mat a(96, 96, CV_8UC3, cv::Scalar(255, 0, 0));
  const std::string caption = "predicted: a rather long class name (99%)   target: another long class name";
  cv::Mat p = render::panel({{"input", a}, {"integrated_gradients_with_a_long_title", a}}, caption, 96);
  // Dark (text) pixels by column, in the caption rows and in the title row.
  auto dark_columns = [&](int y0, int y1) {
    std::vector<int> cols;
    for (int x = 0; x < p.cols; ++x)
      for (int y = y0; y < y1; ++y)
        if (p.at<cv::Vec3b>(y, x)[1] < 128) {
          cols.push_back(x);
          break;
        }
    return cols;
  };
  const int cells_top = p.rows - 8 - 96, title_top = cells_top - 24;
  EXPECT_GT(title_top, 28);  // the caption wrapped onto more than one line
  const std::vector<int> caption_cols = dark_columns(0, title_top);
  ASSERT_FALSE(caption_cols.empty());
  EXPECT_GE(caption_cols.front(), 8);
  EXPECT_LT(caption_cols.back(), p.cols - 8);  // nothing cut at the right edge
  // The second title starts in its cell and ends before the cell's right edge.
  const std::vector<int> title_cols = dark_columns(title_top, cells_top);
  ASSERT_FALSE(title_cols.empty());
  EXPECT_LT(title_cols.back(), 8 + 2 * (96 + 8) - 8);
  EXPECT_GT(title_cols.back(), 8 + 96 + 8 + 48);  // still a title, not a few letters
  // A caption that fits stays one line.
  EXPECT_EQ(render::panel({{"input", a}}, "ok", 96).rows, 28 + 24 + 96 + 8);
}

TEST(Images, JpegInRgbGrayAndCmykDecodesToRgb) {
  // Fixtures written by PIL: a flat (200, 100, 50) colour, also saved as CMYK; gray 90.
  auto near = [](const cv::Vec3b& a, const cv::Vec3b& b) {
    for (int c = 0; c < 3; ++c)
      if (std::abs(int(a[c]) - int(b[c])) > 3) return false;
    return true;
  };
  cv::Mat rgb = io::read_image(data("images/rgb.jpg"));
  EXPECT_EQ(rgb.size(), cv::Size(16, 12));
  EXPECT_TRUE(near(rgb.at<cv::Vec3b>(5, 5), cv::Vec3b(200, 100, 50))) << rgb.at<cv::Vec3b>(5, 5);
  cv::Mat cmyk = io::read_image(data("images/cmyk.jpg"));
  EXPECT_TRUE(near(cmyk.at<cv::Vec3b>(5, 5), cv::Vec3b(200, 100, 50))) << cmyk.at<cv::Vec3b>(5, 5);
  cv::Mat gray = io::read_image(data("images/gray.jpg"));
  EXPECT_TRUE(near(gray.at<cv::Vec3b>(5, 5), cv::Vec3b(90, 90, 90))) << gray.at<cv::Vec3b>(5, 5);
}

namespace {

// Runs of pixels within 70 (RGB distance) of `colour` along image row y, as [begin, end).
std::vector<std::pair<int, int>> colour_runs(const cv::Mat& img, int y, cv::Vec3b colour) {
  std::vector<std::pair<int, int>> runs;
  for (int x = 0; x < img.cols; ++x) {
    const cv::Vec3b p = img.at<cv::Vec3b>(y, x);
    double distance = 0;
    for (int c = 0; c < 3; ++c) distance += std::pow(double(p[c]) - colour[c], 2);
    if (distance >= 70 * 70) continue;
    if (!runs.empty() && runs.back().second == x)
      ++runs.back().second;
    else
      runs.push_back({x, x + 1});
  }
  return runs;
}

}  // namespace

TEST(Render, AxisTicksAreMultiplesOfOneTwoOrFiveTimesAPowerOfTen) {
  // The sanity curves' Spearman range: steps of 0.2, never an odd label like 0.0241.
  const double step = render::tick_step(-0.33, 1.02);
  EXPECT_DOUBLE_EQ(step, 0.2);
  auto t = render::ticks(-0.4, 1.2, step);
  ASSERT_EQ(t.size(), 9u);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], -0.4 + 0.2 * i, 1e-12);
  EXPECT_EQ(std::signbit(render::ticks(-0.4, 1.2, step)[2]), false);  // 0, not -0
  EXPECT_DOUBLE_EQ(render::tick_step(0, 1), 0.2);
  EXPECT_DOUBLE_EQ(render::tick_step(0, 0.03), 0.005);
  EXPECT_DOUBLE_EQ(render::tick_step(0, 900), 200);
  EXPECT_DOUBLE_EQ(render::tick_step(10, 730), 100);
  // Sanity steps 1..15: whole numbers 2, 4, ..., 14 inside the range.
  const double whole = render::tick_step(1, 15, 5, true);
  EXPECT_DOUBLE_EQ(whole, 2);
  auto w = render::ticks(1, 15, whole);
  EXPECT_EQ(w, (std::vector<double>{2, 4, 6, 8, 10, 12, 14}));
  EXPECT_DOUBLE_EQ(render::tick_step(0, 3, 5, true), 1);  // never a fractional step
  EXPECT_NE(msg_of([] { render::tick_step(1, 1); }).find("no ticks"), std::string::npos);
}

TEST(Render, PlotDrawsEverySegmentAndTellsRepeatedColoursApartByLineStyle) {
  // Series 0, 10, 20, 30 share the first colour; each is a horizontal line of 11 points at
  // its own height. The others are empty (legend only).
  std::vector<render::Series> series(31);
  for (size_t k = 0; k < series.size(); ++k) series[k].name = "series " + std::to_string(k);
  series[30].name = "a long name that the default legend margin would cut off";
  const double level[] = {0, 1, 2, 3};
  for (int s = 0; s < 4; ++s)
    for (int i = 0; i <= 10; ++i) series[10 * s].x.push_back(i / 10.0), series[10 * s].y.push_back(level[s]);
  cv::Mat img = render::plot(series, "styles", "x", "y");
  EXPECT_GE(img.rows, 50 + 8 + 16 * 31);  // taller than 440: every legend row fits
  EXPECT_GT(img.cols, 720);               // wider: the long name fits
  const cv::Vec3b blue(31, 119, 180);
  // Pixels of row y in the colour, in runs starting right of x_min.
  auto covered = [&](int y, int x_min = -1) {
    int n = 0;
    for (auto [b, e] : colour_runs(img, y, blue))
      if (b > x_min) n += e - b;
    return n;
  };

  // The four lines: clusters of rows where the colour covers more than 100 pixels.
  std::vector<int> rows;
  int last = -10;
  for (int y = 0; y < img.rows; ++y) {
    if (covered(y) <= 100) continue;
    if (y - last > 1) rows.push_back(y);
    last = y;
  }
  ASSERT_EQ(rows.size(), 4u);
  // Screen rows run downwards: the last row is series 0 (level 0), the first series 30.
  std::vector<std::vector<std::pair<int, int>>> line(4);
  for (int s = 0; s < 4; ++s) {
    // Centre row of the line: the one with the most coverage among its neighbours.
    int best = rows[3 - s], best_cover = -1;
    for (int y = rows[3 - s]; y < rows[3 - s] + 3; ++y) {
      const int c = covered(y);
      if (c > best_cover) best = y, best_cover = c;
    }
    // The plotted part: runs up to the first gap wider than any dash pattern's gap.
    for (auto r : colour_runs(img, best, blue)) {
      if (!line[s].empty() && r.first - line[s].back().second > 12) break;
      line[s].push_back(r);
    }
    ASSERT_FALSE(line[s].empty());
  }
  const int begin = line[0].front().first, end = line[0].back().second;
  ASSERT_EQ(line[0].size(), 1u);  // solid
  EXPECT_GT(end - begin, 400);
  for (int s = 1; s < 4; ++s) {
    SCOPED_TRACE("style " + std::to_string(s));
    // Every segment drawn: the line spans the solid one's length, with only short gaps.
    EXPECT_LE(std::abs(line[s].front().first - begin), 2);
    EXPECT_LE(std::abs(line[s].back().second - end), 8);
    EXPECT_GT(line[s].size(), 20u);
  }
  auto lengths = [&](int s) {  // run lengths, ends excluded
    std::vector<int> l;
    for (size_t i = 1; i + 1 < line[s].size(); ++i) l.push_back(line[s][i].second - line[s][i].first);
    return std::make_pair(*std::min_element(l.begin(), l.end()), *std::max_element(l.begin(), l.end()));
  };
  auto [dash_min, dash_max] = lengths(1);
  auto [dot_min, dot_max] = lengths(2);
  auto [dd_min, dd_max] = lengths(3);
  EXPECT_GE(dash_min, 8);  // dashes only
  EXPECT_LE(dash_max, 14);
  EXPECT_LE(dot_max, 5);   // dots only
  EXPECT_GE(dd_max, 9);    // dash and dot alternate
  EXPECT_LE(dd_min, 5);

  // The legend shows the style too: its sample for a dashed series has gaps, a solid one none.
  // Blue legend samples (series 0, 10, 20, 30) are found by scanning, not by the layout's
  // margins: each is a cluster of rows right of the plot, taken at its most covered row.
  const int legend_x = end + 4;
  std::vector<int> sample_rows;
  for (int y = 0, prev = 0, best_cover = 0; y < img.rows; ++y) {
    const int c = covered(y, legend_x);
    if (c > 0 && prev == 0) sample_rows.push_back(y), best_cover = c;
    else if (c > best_cover) sample_rows.back() = y, best_cover = c;
    prev = c;
  }
  ASSERT_EQ(sample_rows.size(), 4u);
  auto legend_runs = [&](size_t k) {
    size_t n = 0;
    for (auto [b, e] : colour_runs(img, sample_rows[k / 10], blue))
      if (b > legend_x) ++n;
    return n;
  };
  EXPECT_EQ(legend_runs(0), 1u);
  EXPECT_GE(legend_runs(10), 2u);
  EXPECT_GE(legend_runs(20), 3u);
}

// salient report: DIR/report.html from a batch run's results. Reads results.jsonl,
// errors.jsonl and their shards (results-*-of-*.jsonl, errors-*-of-*.jsonl), checks every
// record, and writes one self-contained page: inline CSS and JS, no network, the data
// embedded once as JSON and rendered a page at a time with DOM APIs (never innerHTML), so
// that 10,000 images stay usable and no string from the data can become markup.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "cli.hpp"

namespace fs = std::filesystem;

namespace salient {
namespace cli {

namespace {

// ordered_json keeps the order of "methods" as batch wrote it (the column order).
using ojson = nlohmann::ordered_json;

struct Counts {
  size_t images = 0, errors = 0;
};

// results.jsonl, then the shards in name order; files that do not exist are skipped.
std::vector<fs::path> record_files(const fs::path& dir, const std::string& stem) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_regular_file(dir / (stem + ".jsonl"), ec)) files.push_back(dir / (stem + ".jsonl"));
  // Anchored: a shard's temporary file (results-0-of-2.jsonl.tmp.123) is not a shard.
  const std::regex shard(stem + "-[^/]+-of-[^/]+\\.jsonl");
  std::vector<fs::path> shards;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file(ec) && std::regex_match(e.path().filename().string(), shard)) shards.push_back(e.path());
  std::sort(shards.begin(), shards.end());
  files.insert(files.end(), shards.begin(), shards.end());
  return files;
}

template <typename F>
void for_each_record(const fs::path& file, F f) {
  for_each_json_line<ojson>(file.string(), f);
}

// Typed access to optional fields: absent or null gives `def`, a wrong type is an error.
std::string get_string(const ojson& j, const char* field, const std::string& where, bool required = false) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    SALIENT_CHECK(!required, where, ": missing \"", field, "\"");
    return {};
  }
  SALIENT_CHECK(it->is_string(), where, ": \"", field, "\" must be a string");
  return it->get<std::string>();
}

ojson get_int(const ojson& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return nullptr;
  SALIENT_CHECK(it->is_number_integer(), where, ": \"", field, "\" must be an integer class index");
  return *it;
}

ojson number_or_null(const ojson& v, const std::string& field, const std::string& where) {
  if (v.is_null()) return nullptr;  // NaN is written as null
  SALIENT_CHECK(v.is_number(), where, ": \"", field, "\" must be a number");
  return v;
}

ojson get_number(const ojson& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  return it == j.end() ? ojson(nullptr) : number_or_null(*it, field, where);
}

// A path relative to DIR as a URL: each segment percent-encoded, so that no file name can
// end the attribute, start a query or fragment, or become a scheme ("javascript:" has its
// colon encoded). Empty segments go, so "//host/x" cannot become a network reference.
ojson path_url(const std::string& path) {
  if (path.empty()) return nullptr;
  static const char* hex = "0123456789ABCDEF";
  std::string url = path[0] == '/' ? "/" : "";
  bool first = true;
  for (const auto& seg : split(path, '/')) {
    if (!first) url += '/';
    first = false;
    for (unsigned char c : seg) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
        url += static_cast<char>(c);
      } else {
        url += '%';
        url += hex[c >> 4];
        url += hex[c & 15];
      }
    }
  }
  return url;
}

// The page's data: {"methods": [...], "metrics": [[method, metric], ...],
//  "rows": [{"k": key, "s": source, "in": url, "pa": url, "p": predicted, "pp": probability,
//            "pl": label, "t": target, "tp": its probability, "tl": label, "o": [overlay url per method],
//            "mv": [value per metrics column]}], "errors": [{"k", "s", "r"}]}
struct Data {
  std::vector<std::string> methods;
  std::vector<std::pair<std::string, std::string>> metrics;
  std::map<std::string, ojson> rows;    // key -> the record; sorted by key
  std::map<std::string, ojson> errors;  // key -> {"k", "s", "r"}
};

void read_result(const ojson& j, const std::string& where, Data* d) {
  ojson row = ojson::object();
  const std::string key = get_string(j, "key", where, true);
  row["k"] = key;
  row["s"] = get_string(j, "source", where);
  row["in"] = path_url(get_string(j, "input", where));
  row["pa"] = path_url(get_string(j, "panel", where));
  row["p"] = get_int(j, "predicted", where);
  row["pp"] = get_number(j, "probability", where);
  row["t"] = get_int(j, "target", where);
  row["tp"] = get_number(j, "target_probability", where);
  const std::string pl = get_string(j, "predicted_label", where), tl = get_string(j, "target_label", where);
  if (!pl.empty()) row["pl"] = pl;
  if (!tl.empty()) row["tl"] = tl;
  // Methods and metrics stay by name here; they become columns once all records are read.
  ojson methods = ojson::object();
  if (j.contains("methods") && !j["methods"].is_null()) {
    SALIENT_CHECK(j["methods"].is_object(), where, ": \"methods\" must be an object");
    for (const auto& m : j["methods"].items()) {
      const std::string mw = where + ": method \"" + m.key() + "\"";
      SALIENT_CHECK(m.value().is_object(), mw, " must be an object");
      ojson entry = {{"o", path_url(get_string(m.value(), "overlay", mw))}, {"m", ojson::object()}};
      if (std::find(d->methods.begin(), d->methods.end(), m.key()) == d->methods.end())
        d->methods.push_back(m.key());
      if (m.value().contains("metrics") && !m.value()["metrics"].is_null()) {
        SALIENT_CHECK(m.value()["metrics"].is_object(), mw, ": \"metrics\" must be an object");
        for (const auto& v : m.value()["metrics"].items()) {
          entry["m"][v.key()] = number_or_null(v.value(), v.key(), mw + ": metrics");
          std::pair<std::string, std::string> column{m.key(), v.key()};
          if (std::find(d->metrics.begin(), d->metrics.end(), column) == d->metrics.end())
            d->metrics.push_back(column);
        }
      }
      methods[m.key()] = entry;
    }
  }
  row["methods"] = methods;
  // A resumed or retried run may write an image again: the later record is the newer one.
  d->rows[key] = row;
}

Data read_data(const std::string& dir) {
  Data d;
  for (const auto& file : record_files(dir, "results"))
    for_each_record(file, [&](const ojson& j, const std::string& where) { read_result(j, where, &d); });
  for (const auto& file : record_files(dir, "errors"))
    for_each_record(file, [&](const ojson& j, const std::string& where) {
      const std::string key = get_string(j, "key", where, true);
      d.errors[key] = {{"k", key}, {"s", get_string(j, "source", where)}, {"r", get_string(j, "reason", where)}};
    });
  // An image that failed once and then succeeded (a retry, a resumed run) is not an error.
  for (auto it = d.errors.begin(); it != d.errors.end();)
    it = d.rows.count(it->first) ? d.errors.erase(it) : std::next(it);
  // Metric columns grouped by method, in the order the methods appear.
  std::stable_sort(d.metrics.begin(), d.metrics.end(), [&](const auto& a, const auto& b) {
    auto pos = [&](const std::string& m) { return std::find(d.methods.begin(), d.methods.end(), m); };
    return pos(a.first) < pos(b.first);
  });
  return d;
}

ojson page_data(const Data& d) {
  ojson metrics = ojson::array(), rows = ojson::array(), errors = ojson::array();
  for (const auto& c : d.metrics) metrics.push_back(ojson::array({c.first, c.second}));
  for (const auto& kv : d.rows) {
    ojson r = kv.second;
    const ojson& methods = r["methods"];
    ojson overlays = ojson::array(), values = ojson::array();
    for (const auto& m : d.methods) overlays.push_back(methods.contains(m) ? methods[m]["o"] : ojson(nullptr));
    for (const auto& c : d.metrics) {
      const ojson* v = nullptr;
      if (methods.contains(c.first) && methods[c.first]["m"].contains(c.second)) v = &methods[c.first]["m"][c.second];
      values.push_back(v ? *v : ojson(nullptr));
    }
    r.erase("methods");
    r["o"] = overlays;
    r["mv"] = values;
    rows.push_back(r);
  }
  for (const auto& kv : d.errors) errors.push_back(kv.second);
  return {{"methods", d.methods}, {"metrics", metrics}, {"rows", rows}, {"errors", errors}};
}

// JSON that is safe inside <script>: no '<' (so no "</script" or "<!--"), no '>' or '&',
// and no U+2028/U+2029. These bytes only occur inside JSON strings, where \uXXXX means the
// same character, so JSON.parse gives back exactly the original strings.
std::string script_safe_json(const ojson& j) {
  const std::string s = j.dump(-1, ' ', false, ojson::error_handler_t::replace);
  std::string out;
  out.reserve(s.size() + s.size() / 16);
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '<') out += "\\u003c";
    else if (c == '>') out += "\\u003e";
    else if (c == '&') out += "\\u0026";
    else if (c == '\xE2' && i + 2 < s.size() && s[i + 1] == '\x80' && (s[i + 2] == '\xA8' || s[i + 2] == '\xA9')) {
      out += s[i + 2] == '\xA8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

// A fresh nonce per page: the Content-Security-Policy runs only the page's own script and
// style, so even markup that got in some other way could not run (no inline handlers).
std::string nonce() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) s += hex[rd() & 15];
  return s;
}

// The page, cut where the nonce and the data go. Nothing from the data is in this text.
const char* kHead = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file:; style-src 'nonce-@NONCE@'; script-src 'nonce-@NONCE@'; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>salient report</title>
<style nonce="@NONCE@">
:root { color-scheme: light; --line: #d8dce3; --muted: #5f6b7a; --accent: #2457c5; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2430; background: #f6f7f9; }
header, main > section { padding: 0 24px; }
header { padding-top: 16px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
.summary { margin: 0 0 4px; font-weight: 600; }
.legend { margin: 0 0 12px; color: var(--muted); max-width: 72em; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; padding: 10px 24px;
            background: #fff; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
.controls label { display: flex; gap: 6px; align-items: center; color: var(--muted); }
.controls select, .controls input[type=search] { font: inherit; padding: 3px 6px; border: 1px solid #b9c0cb;
            border-radius: 4px; background: #fff; color: #1d2430; }
.controls input[type=search] { width: 16em; }
.pager { display: flex; gap: 6px; align-items: center; margin-left: auto; }
.pager button { font: inherit; padding: 2px 10px; border: 1px solid #b9c0cb; border-radius: 4px; background: #fff;
                cursor: pointer; }
.pager button:disabled { opacity: .4; cursor: default; }
.count { color: var(--muted); white-space: nowrap; }
.tablewrap { padding: 0 24px; }
table { border-collapse: separate; border-spacing: 0; background: #fff; }
table.rows { margin-top: 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; text-align: left; vertical-align: top; }
thead th { position: sticky; top: 0; z-index: 1; background: #eef1f5; font-weight: 600; white-space: nowrap;
           border-bottom: 2px solid #c4cad3; }
tbody tr:hover { background: #fafbfd; }
td.num { color: var(--muted); text-align: right; font-variant-numeric: tabular-nums; }
.key { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px;
       word-break: break-all; max-width: 22em; }
.source { display: block; color: var(--muted); font-size: 12px; margin-top: 2px; }
td.key { min-width: 12em; }
img.thumb { width: 128px; height: 128px; object-fit: contain; display: block; background: #e9ecf0;
            border: 1px solid var(--line); image-rendering: auto; }
img.thumb.broken { outline: 2px dashed var(--bad); }
.none { display: inline-block; width: 128px; height: 128px; line-height: 128px; text-align: center; color: var(--muted);
        background: #f0f2f5; border: 1px dashed var(--line); font-size: 12px; }
.metrics { margin: 4px 0 0; font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
.metrics span { display: block; }
.metrics b { color: #1d2430; font-weight: 600; }
.metrics .sorted { color: var(--accent); }
.cls { font-weight: 600; }
.prob { font-variant-numeric: tabular-nums; color: var(--muted); }
.bar { width: 96px; height: 6px; background: #e4e8ee; border-radius: 3px; margin-top: 4px; overflow: hidden; }
.bar > div { height: 100%; background: var(--accent); }
.miss { color: var(--bad); font-weight: 600; }
.empty { padding: 24px; color: var(--muted); }
table.errors td.reason { color: var(--bad); max-width: 60em; word-break: break-word; }
footer { padding: 16px 24px 32px; color: var(--muted); font-size: 12px; }
</style>
</head>
<body>
<header>
<h1>salient report</h1>
<p class="summary" id="summary"></p>
<p class="legend">Each overlay is normalised on its own (per image and method): its colours rank the regions
within that one map, not across images or methods. <em>Original</em> is the model input as the model saw it
(click it for the panel); click an overlay for full size.</p>
</header>
<noscript><p class="empty">This report draws its rows with JavaScript; please enable it.</p></noscript>
<div class="controls" id="controls">
<label>Sort <select id="sort"></select></label>
<label>Predicted class <select id="cls"></select></label>
<label>Key <input type="search" id="q" placeholder="filter by key" autocomplete="off"></label>
<label><input type="checkbox" id="miss"> only prediction &ne; target</label>
<div class="pager" id="pager-top"></div>
</div>
<main>
<div class="tablewrap">
<table class="rows" id="table"><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
<p class="empty" id="empty" hidden>No image matches the filters.</p>
</div>
<div class="controls" id="controls-bottom"><div class="pager" id="pager-bottom"></div></div>
<section id="errors-section" hidden>
<h2 id="errors-title">Errors</h2>
<table class="errors"><thead><tr><th>Key</th><th>Reason</th><th>Source</th></tr></thead><tbody id="errors"></tbody></table>
</section>
</main>
<footer>Written by salient report. Self-contained: no network access; images are read from files next to this page.</footer>
<script type="application/json" id="salient-data">)HTML";

const char* kTail = R"HTML(</script>
<script nonce="@NONCE@">
(function () {
  'use strict';
  // Every string from the data goes in with textContent or setAttribute, never as markup.
  var D = JSON.parse(document.getElementById('salient-data').textContent);
  var PAGE = 50;
  var methods = D.methods, metrics = D.metrics, rows = D.rows, errors = D.errors;
  for (var i = 0; i < rows.length; ++i) rows[i].i = i;  // key order, as written

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }
  function isNum(x) { return typeof x === 'number' && isFinite(x); }
  function fmt(x) { return isNum(x) ? x.toFixed(3) : '\u2013'; }
  function className(k, label) {
    if (k == null) return '\u2013';
    if (label == null) label = classLabel[k];
    return label != null ? label + ' (' + k + ')' : 'class ' + k;
  }
  function loaded() {
    var n = 0, imgs = document.images;
    for (var i = 0; i < imgs.length; ++i) if (imgs[i].complete && imgs[i].naturalWidth > 0) ++n;
    document.body.dataset.imagesLoaded = String(n);
  }

  // Sort options: key order, confidence, and each method x metric, both ways.
  var sorts = [{id: 'key', text: 'key (A\u2192Z)', value: function (r) { return r.i; }, dir: 1},
               {id: 'confidence-desc', text: 'confidence, high \u2192 low', value: function (r) { return r.pp; }, dir: -1},
               {id: 'confidence-asc', text: 'confidence, low \u2192 high', value: function (r) { return r.pp; }, dir: 1}];
  metrics.forEach(function (c, m) {
    var get = function (r) { return r.mv[m]; };
    sorts.push({id: 'metric-' + m + '-desc', text: c[0] + ' ' + c[1] + ', high \u2192 low', value: get, dir: -1, metric: m});
    sorts.push({id: 'metric-' + m + '-asc', text: c[0] + ' ' + c[1] + ', low \u2192 high', value: get, dir: 1, metric: m});
  });
  var sortById = {};
  var sortSel = document.getElementById('sort');
  sorts.forEach(function (s) {
    sortById[s.id] = s;
    var o = el('option', null, s.text);
    o.value = s.id;
    sortSel.appendChild(o);
  });

  // Class filter: the predicted classes present, with their counts.
  // A label seen anywhere names its class everywhere (a target may come without one).
  var classes = {}, classLabel = {};
  rows.forEach(function (r) {
    if (r.pl != null && r.p != null) classLabel[r.p] = r.pl;
    if (r.tl != null && r.t != null) classLabel[r.t] = r.tl;
    if (r.p != null) classes[r.p] = (classes[r.p] || 0) + 1;
  });
  var clsSel = document.getElementById('cls');
  var all = el('option', null, 'all (' + rows.length + ')');
  all.value = '';
  clsSel.appendChild(all);
  Object.keys(classes).map(Number).sort(function (a, b) { return a - b; }).forEach(function (k) {
    var o = el('option', null, className(k, classLabel[k]) + ' \u00b7 ' + classes[k]);
    o.value = String(k);
    clsSel.appendChild(o);
  });
  var qInput = document.getElementById('q'), missBox = document.getElementById('miss');

  // State lives in the URL fragment, so a view can be bookmarked or shared (#sort=&cls=&q=&miss=1&page=).
  var state = {sort: 'key', cls: '', q: '', miss: false, page: 1};
  (function () {
    var h = new URLSearchParams(location.hash.replace(/^#/, ''));
    var own = function (o, k) { return k != null && Object.prototype.hasOwnProperty.call(o, k); };
    if (own(sortById, h.get('sort'))) state.sort = h.get('sort');
    if (own(classes, h.get('cls'))) state.cls = h.get('cls');
    state.q = h.get('q') || '';
    state.miss = h.get('miss') === '1';
    state.page = Math.max(1, parseInt(h.get('page'), 10) || 1);
  })();
  sortSel.value = state.sort;
  clsSel.value = state.cls;
  qInput.value = state.q;
  missBox.checked = state.miss;

  function saveState() {
    var h = new URLSearchParams();
    if (state.sort !== 'key') h.set('sort', state.sort);
    if (state.cls !== '') h.set('cls', state.cls);
    if (state.q) h.set('q', state.q);
    if (state.miss) h.set('miss', '1');
    if (state.page > 1) h.set('page', String(state.page));
    var s = h.toString();
    try { history.replaceState(null, '', s ? '#' + s : location.pathname + location.search); } catch (e) { /* file: in some browsers */ }
  }

  var view = null;  // the filtered, sorted rows; rebuilt when a filter or the sort changes
  function rebuild() {
    var q = state.q.toLowerCase(), cls = state.cls === '' ? null : Number(state.cls);
    view = rows.filter(function (r) {
      if (cls !== null && r.p !== cls) return false;
      if (state.miss && !(r.t != null && r.p != null && r.t !== r.p)) return false;
      return !q || r.k.toLowerCase().indexOf(q) >= 0;
    });
    var s = sortById[state.sort];
    view.sort(function (a, b) {
      var x = s.value(a), y = s.value(b), hx = isNum(x), hy = isNum(y);
      if (hx !== hy) return hx ? -1 : 1;  // rows without the value last, either way
      if (hx && x !== y) return (x < y ? -1 : 1) * s.dir;
      return a.i - b.i;
    });
  }

  // The header: key, original, one column per method, prediction, target.
  var head = document.getElementById('head');
  head.appendChild(el('th', null, '#'));
  head.appendChild(el('th', null, 'Key'));
  head.appendChild(el('th', null, 'Original'));
  methods.forEach(function (m) { head.appendChild(el('th', null, m)); });
  head.appendChild(el('th', null, 'Predicted'));
  head.appendChild(el('th', null, 'Target'));

  function thumb(url, alt, link) {
    if (url == null) return el('span', 'none', 'no image');
    var a = el('a');
    a.setAttribute('href', link == null ? url : link);
    a.setAttribute('target', '_blank');
    a.setAttribute('rel', 'noopener noreferrer');
    var img = el('img', 'thumb');
    img.setAttribute('loading', 'lazy');  // before src, so that it applies
    img.setAttribute('decoding', 'async');
    img.setAttribute('width', '128');
    img.setAttribute('height', '128');
    img.setAttribute('alt', alt);
    img.addEventListener('load', loaded);
    img.addEventListener('error', function () { img.classList.add('broken'); });
    img.setAttribute('src', url);
    a.appendChild(img);
    return a;
  }

  function rowElement(r, n, sortedMetric) {
    var tr = el('tr');
    tr.appendChild(el('td', 'num', n));
    var key = el('td', 'key', r.k);
    if (r.s) {
      var src = el('span', 'source', r.s);
      src.setAttribute('title', r.s);
      key.appendChild(src);
    }
    tr.appendChild(key);
    var orig = el('td');
    orig.appendChild(thumb(r['in'], 'input of ' + r.k, r.pa));
    tr.appendChild(orig);
    methods.forEach(function (m, j) {
      var td = el('td');
      td.appendChild(thumb(r.o[j], m + ' overlay of ' + r.k));
      var box = null;
      metrics.forEach(function (c, k) {
        if (c[0] !== m || r.mv[k] == null) return;
        if (!box) box = el('div', 'metrics');
        var line = el('span', k === sortedMetric ? 'sorted' : null, c[1] + ' ');
        line.appendChild(el('b', null, fmt(r.mv[k])));
        box.appendChild(line);
      });
      if (box) td.appendChild(box);
      tr.appendChild(td);
    });
    var pred = el('td');
    pred.appendChild(el('div', 'cls', className(r.p, r.pl)));
    if (isNum(r.pp)) {
      pred.appendChild(el('div', 'prob', 'p = ' + r.pp.toFixed(3)));
      var bar = el('div', 'bar'), fill = el('div');
      fill.style.width = (Math.max(0, Math.min(1, r.pp)) * 100).toFixed(1) + '%';
      bar.appendChild(fill);
      pred.appendChild(bar);
    }
    tr.appendChild(pred);
    var tgt = el('td');
    tgt.appendChild(el('div', null, className(r.t, r.tl)));
    if (r.t != null && r.p != null && r.t !== r.p) {
      if (isNum(r.tp)) tgt.appendChild(el('div', 'prob', 'p = ' + r.tp.toFixed(3)));
      tgt.appendChild(el('div', 'miss', '\u2260 predicted'));
    }
    tr.appendChild(tgt);
    return tr;
  }

  function pager(id, pages) {
    var box = document.getElementById(id);
    while (box.firstChild) box.removeChild(box.firstChild);
    var n = view.length, start = (state.page - 1) * PAGE;
    var text = n ? 'rows ' + (start + 1) + '\u2013' + Math.min(n, start + PAGE) + ' of ' + n : 'rows 0 of 0';
    if (n !== rows.length) text += ' (filtered from ' + rows.length + ')';
    box.appendChild(el('span', 'count', text));
    [['\u00ab', 1], ['\u2039 prev', state.page - 1], ['next \u203a', state.page + 1], ['\u00bb', pages]].forEach(function (b) {
      var btn = el('button', null, b[0]);
      btn.type = 'button';
      btn.disabled = b[1] < 1 || b[1] > pages || b[1] === state.page;
      btn.addEventListener('click', function () { state.page = b[1]; render(); window.scrollTo(0, 0); });
      box.appendChild(btn);
    });
    box.appendChild(el('span', 'count', 'page ' + state.page + ' of ' + pages));
  }

  function render() {
    if (!view) rebuild();
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    state.page = Math.min(Math.max(1, state.page), pages);
    var start = (state.page - 1) * PAGE, end = Math.min(view.length, start + PAGE);
    var sortedMetric = sortById[state.sort].metric;
    var body = document.getElementById('rows');
    while (body.firstChild) body.removeChild(body.firstChild);
    var frag = document.createDocumentFragment();
    for (var i = start; i < end; ++i) frag.appendChild(rowElement(view[i], i + 1, sortedMetric));
    body.appendChild(frag);
    document.getElementById('empty').hidden = view.length > 0;
    pager('pager-top', pages);
    pager('pager-bottom', pages);
    saveState();
    document.body.dataset.rendered = String(end - start);
    loaded();
  }

  function changed() { view = null; state.page = 1; render(); }
  sortSel.addEventListener('change', function () { state.sort = sortSel.value; changed(); });
  clsSel.addEventListener('change', function () { state.cls = clsSel.value; changed(); });
  qInput.addEventListener('input', function () { state.q = qInput.value; changed(); });
  missBox.addEventListener('change', function () { state.miss = missBox.checked; changed(); });

  // Summary and errors.
  var metricNames = [];
  metrics.forEach(function (c) { if (metricNames.indexOf(c[1]) < 0) metricNames.push(c[1]); });
  var summary = rows.length + (rows.length === 1 ? ' image, ' : ' images, ') + errors.length +
                (errors.length === 1 ? ' error' : ' errors') + ' \u00b7 methods: ' + (methods.join(', ') || 'none');
  if (metricNames.length) summary += ' \u00b7 metrics: ' + metricNames.join(', ');
  document.getElementById('summary').textContent = summary;
  if (errors.length) {
    document.getElementById('errors-section').hidden = false;
    document.getElementById('errors-title').textContent = 'Errors (' + errors.length + ')';
    var eb = document.getElementById('errors');
    errors.forEach(function (e) {
      var tr = el('tr');
      tr.appendChild(el('td', 'key', e.k));
      tr.appendChild(el('td', 'reason', e.r));
      tr.appendChild(el('td', 'key', e.s));
      eb.appendChild(tr);
    });
  }
  if (!rows.length) {
    document.getElementById('table').hidden = true;
    document.getElementById('controls').hidden = true;
    document.getElementById('controls-bottom').hidden = true;
  }
  render();
})();
</script>
</body>
</html>
)HTML";

std::string with_nonce(std::string s, const std::string& n) {
  for (size_t at; (at = s.find("@NONCE@")) != std::string::npos;) s.replace(at, 7, n);
  return s;
}

Counts write(const std::string& dir) {
  Data d = read_data(dir);
  SALIENT_CHECK(!d.rows.empty() || !d.errors.empty(), "no results in ", dir, ": run salient batch first");
  const std::string n = nonce();
  // The data goes in by concatenation, after the nonce, so that no string in it is ever
  // searched for placeholders.
  std::string html = with_nonce(kHead, n) + script_safe_json(page_data(d)) + with_nonce(kTail, n);
  io::write_file_atomic((fs::path(dir) / "report.html").string(), html);
  return {d.rows.size(), d.errors.size()};
}

}  // namespace

size_t write_report(const std::string& dir) { return write(dir).images; }

Runner add_report(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  app.add_option("--out,-o", *dir, "The output directory of salient batch")->required();
  app.footer("Writes DIR/report.html: one row per image (input, overlays, prediction, target, metrics), sortable,\n"
             "filterable and paginated; self-contained (no network), images referenced relatively.");
  return [dir] {
    Counts c = write(*dir);
    std::cout << "wrote " << (fs::path(*dir) / "report.html").string() << " (" << c.images << " images, " << c.errors
              << " errors)\n";
    return 0;
  };
}

}  // namespace cli
}  // namespace salient

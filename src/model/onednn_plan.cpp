#include "model/onednn_plan.hpp"

#include <stdexcept>

#if SALIENT_HAVE_ONEDNN
#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/runtime/operator.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <climits>
#include <cstdlib>
#include <map>
#include <optional>
#include <mutex>
#include <unordered_map>
#endif

namespace salient {
namespace model {

#if !SALIENT_HAVE_ONEDNN

struct OneDnnPlan::Impl {};

bool onednn_plan_available() { return false; }

std::shared_ptr<OneDnnPlan> OneDnnPlan::build(const std::shared_ptr<torch::jit::Graph>&, std::string* why) {
  if (why) *why = "this build has no oneDNN";
  return nullptr;
}

c10::IValue OneDnnPlan::run(const at::Tensor&) const { throw std::runtime_error("this build has no oneDNN"); }

void OneDnnPlan::release_buffers() const {}

int64_t OneDnnPlan::buffer_bytes() const { return 0; }

#else

namespace {

using dnnl::algorithm;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

enum class Kind { Conv, MaxPool, AvgPool, Generic, Tuple, List };

// A value while the plan runs: a plain IValue, or a tensor in a oneDNN layout (or both,
// once a plain copy was needed).
struct Val {
  c10::IValue iv;
  bool mem = false;
  memory::desc md;
  at::Tensor buf;      // storage of a oneDNN-held tensor
  bool owned = false;  // buf was allocated by the plan: it may be written in place
};

at::Tensor alloc(const memory::desc& md) {
  return at::empty({static_cast<int64_t>((md.get_size() + sizeof(float) - 1) / sizeof(float))},
                   at::TensorOptions().dtype(at::kFloat));
}

// The plan's activation buffers, kept between runs. Allocated and freed by each run, they
// fragmented malloc's heap as batch sizes changed (ResNet-50 at batches of 50, 50, 51, 49,
// 50, 52, 48: 1071 MiB more than after one image against 608 MiB for batches of 50 only;
// pooled, 626 MiB). A run takes the smallest free block of at least its size class (at
// most twice it). The pool holds at most twice the most bytes one run has held at once:
// to stay under it, a new block first frees blocks the current run has not taken, so a
// growing batch size does not keep the smaller size's buffers, while a small probe batch
// between large ones keeps both sets. Blocks come from malloc and go back to it on
// release_free(): with salient::retain_freed_memory() their pages stay resident for
// whatever runs next (unmapped pages would be faulted in again by the next method: on
// this machine that took ResNet-50's occlusion from 0.57 to 1.04 of eager forwards).
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  ~BufferPool() { release_free(); }
  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }
  // Frees every free block (blocks outputs still use return later as usual).
  void release_free() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& b : free_) std::free(b.second.p), held_ -= b.first;
    free_.clear();
  }
  uint64_t begin_run() {
    std::lock_guard<std::mutex> lock(mu_);
    return ++gen_;
  }
  // A float tensor of at least `bytes`, pooled from `kMin` bytes up.
  at::Tensor take(size_t bytes, uint64_t gen) {
    const int64_t n = static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float));
    if (bytes < kMin) return at::empty({n}, at::TensorOptions().dtype(at::kFloat));
    void* p = nullptr;
    size_t size = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const size_t want = size_class(bytes);
      auto it = free_.lower_bound(want);
      if (it != free_.end() && it->first <= 2 * want) {
        p = it->second.p, size = it->first;
        free_.erase(it);
      } else {
        size = want;
        peak_ = std::max(peak_, in_use_ + size);
        for (auto f = free_.begin(); f != free_.end() && held_ + size > 2 * peak_;) {
          if (f->second.gen == gen) {
            ++f;
            continue;
          }
          std::free(f->second.p);
          held_ -= f->first;
          f = free_.erase(f);
        }
        if (posix_memalign(&p, 64, size) != 0)
          throw std::runtime_error("oneDNN plan: cannot allocate " + std::to_string(size) + " bytes");
        held_ += size;
      }
      in_use_ += size;
    }
    std::shared_ptr<BufferPool> self = shared_from_this();
    return at::from_blob(
        p, {n}, [self, size, gen](void* q) { self->give_back(q, size, gen); }, at::TensorOptions().dtype(at::kFloat));
  }

 private:
  static constexpr size_t kMin = size_t(1) << 18, kPage = 4096;
  // Sizes rounded up to 8 steps per power of two (whole pages): the same layer's buffer at
  // a batch of 49, 50 or 51 is one class, so alternating chunk sizes share blocks.
  static size_t size_class(size_t bytes) {
    size_t step = kPage;
    while (step * 16 <= bytes) step *= 2;
    return (bytes + step - 1) / step * step;
  }
  struct Block {
    void* p;
    uint64_t gen;  // the run that last took it
  };
  void give_back(void* p, size_t size, uint64_t gen) {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= size;
    free_.emplace(size, Block{p, gen});
  }
  std::mutex mu_;
  uint64_t gen_ = 0;
  size_t in_use_ = 0, held_ = 0, peak_ = 0;  // bytes: taken now, held (taken or free), most taken at once
  std::multimap<size_t, Block> free_;          // by size
};

memory::dims dims_of(at::IntArrayRef s) { return memory::dims(s.begin(), s.end()); }

// What a step has built for one input layout: oneDNN picks kernels per shape.
struct Prepared {
  memory::desc key;  // the input's layout as it comes
  memory::desc src;  // the layout the primitive reads
  dnnl::primitive prim;
  memory::desc dst, weights, bias, scratch;
  at::Tensor wbuf, bbuf;  // the convolution's weights and bias in the layouts it reads
};

struct Step {
  Kind kind = Kind::Generic;
  torch::jit::Node* node = nullptr;
  std::vector<int> in, out;
  // Conv
  at::Tensor weight, bias;
  int64_t groups = 1;
  std::vector<int64_t> stride, padding, dilation, kernel;
  bool relu = false;  // fused ReLU (after the sum, when both)
  int sum = -1;       // value added to the output (post-op sum), or -1
  // MaxPool / AvgPool
  bool ceil_mode = false;
  std::vector<int64_t> out_size;  // adaptive average pooling: output H, W
  // Generic
  mutable std::optional<torch::jit::Operation> op;  // optional: it has no default constructor
  std::vector<int> release;  // values no later step reads
  mutable std::mutex mu;
  mutable std::vector<std::shared_ptr<const Prepared>> prepared;
};

std::optional<std::vector<int64_t>> int_list(torch::jit::Value* v, size_t n) {
  auto iv = torch::jit::toIValue(v);
  if (!iv) return std::nullopt;
  std::vector<int64_t> out;
  if (iv->isInt()) {
    out.assign(n, iv->toInt());
  } else if (iv->isIntList()) {
    out = iv->toIntVector();
    if (out.size() == 1) out.assign(n, out[0]);
  } else {
    return std::nullopt;
  }
  if (out.size() != n) return std::nullopt;
  return out;
}

std::optional<at::Tensor> const_tensor(torch::jit::Value* v) {
  auto iv = torch::jit::toIValue(v);
  if (!iv || !iv->isTensor()) return std::nullopt;
  return iv->toTensor();
}

bool const_is(torch::jit::Value* v, double x) {
  auto iv = torch::jit::toIValue(v);
  return iv && ((iv->isInt() && iv->toInt() == x) || (iv->isDouble() && iv->toDouble() == x));
}

bool const_bool(torch::jit::Value* v, bool x) {
  auto iv = torch::jit::toIValue(v);
  return iv && iv->isBool() && iv->toBool() == x;
}

// An in-place op: writes to its first input.
bool in_place(const torch::jit::Node* n) {
  std::string s = n->kind().toUnqualString();
  return n->kind().is_aten() && s.size() > 1 && s.back() == '_' && s[s.size() - 2] != '_';
}

}  // namespace

struct OneDnnPlan::Impl {
  std::shared_ptr<torch::jit::Graph> graph;  // held: steps point into it
  int n_values = 0;
  int input = -1;
  std::vector<std::pair<int, c10::IValue>> constants;
  std::vector<std::unique_ptr<Step>> steps;
  std::vector<int> outputs;
  std::vector<int> last_use;  // per value: last step reading it (INT_MAX: a graph output)
  std::shared_ptr<BufferPool> pool = std::make_shared<BufferPool>();

  // Converts a plain 4-D float tensor to a oneDNN memory on its data (no copy).
  memory as_memory(Val& v) const {
    if (!v.mem) {
      if (!v.iv.isTensor()) throw std::runtime_error("oneDNN plan: a convolution's input is not a tensor");
      at::Tensor t = v.iv.toTensor();
      if (t.dim() != 4 || t.scalar_type() != at::kFloat || !t.device().is_cpu())
        throw std::runtime_error("oneDNN plan: a convolution's input is not a 4-D float CPU tensor");
      v.buf = t.contiguous();
      v.md = memory::desc(dims_of(t.sizes()), dt::f32, tag::nchw);
      v.mem = true;
      v.owned = false;
    }
    return memory(v.md, cpu_engine(), v.buf.data_ptr());
  }

  // The plain (NCHW) tensor of a value.
  c10::IValue as_ivalue(Val& v, dnnl::stream& s, uint64_t gen) const {
    if (!v.iv.isNone() || !v.mem) return v.iv;
    memory::dims d = v.md.dims();
    std::vector<int64_t> sizes(d.begin(), d.end());
    memory::desc plain(d, dt::f32, tag::nchw);
    if (v.md == plain) {
      // A view of the buffer: an op may hand it on (flatten does), so nothing may write
      // into the buffer in place from now on.
      v.iv = v.buf.narrow(0, 0, static_cast<int64_t>(plain.get_size() / sizeof(float))).view(sizes);
      v.owned = false;
    } else {
      at::Tensor t = pool->take(plain.get_size(), gen).view(sizes);
      memory src(v.md, cpu_engine(), v.buf.data_ptr()), dst(plain, cpu_engine(), t.data_ptr());
      dnnl::reorder(src, dst).execute(s, src, dst);
      s.wait();
      v.iv = t;
    }
    return v.iv;
  }

  // src copied into buffer b, in layout md.
  std::pair<memory, at::Tensor> reordered(memory src, const memory::desc& md, at::Tensor b, dnnl::stream& s) const {
    memory dst(md, cpu_engine(), b.data_ptr());
    dnnl::reorder(src, dst).execute(s, src, dst);
    return {dst, b};
  }

  std::shared_ptr<const Prepared> prepare(const Step& st, const memory::desc& src_md, dnnl::stream& s) const {
    std::lock_guard<std::mutex> lock(st.mu);
    for (const auto& p : st.prepared)
      if (p->key == src_md) return p;
    auto p = std::make_shared<Prepared>();
    p->key = src_md;
    const memory::dims d = src_md.dims();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (st.kind == Kind::Conv) {
      const int64_t N = d[0], C = d[1], H = d[2], W = d[3];
      const int64_t O = st.weight.size(0), I = st.weight.size(1), KH = st.weight.size(2), KW = st.weight.size(3);
      if (C != I * st.groups) throw std::runtime_error("oneDNN plan: input channels do not match the weights");
      const int64_t OH = (H + 2 * st.padding[0] - st.dilation[0] * (KH - 1) - 1) / st.stride[0] + 1;
      const int64_t OW = (W + 2 * st.padding[1] - st.dilation[1] * (KW - 1) - 1) / st.stride[1] + 1;
      if (OH <= 0 || OW <= 0) throw std::runtime_error("oneDNN plan: input smaller than a kernel");
      dnnl::post_ops po;
      if (st.sum >= 0) po.append_sum(1.f);
      if (st.relu) po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(po);
      // One blocked layout between convolutions (channels in 16s): Winograd reads and
      // writes only that one, and mixing layouts would add a reorder per layer.
      auto layout = [](int64_t c) { return c % 16 == 0 ? tag::nChw16c : tag::any; };
      memory::desc wmd = st.groups == 1
                             ? memory::desc({O, I, KH, KW}, dt::f32, tag::any)
                             : memory::desc({st.groups, O / st.groups, I, KH, KW}, dt::f32, tag::any);
      memory::desc bmd({O}, dt::f32, tag::any);
      const memory::dims strides{st.stride[0], st.stride[1]}, dil{st.dilation[0] - 1, st.dilation[1] - 1},
          pad{st.padding[0], st.padding[1]};
      auto make = [&](algorithm alg, tag src_tag, tag dst_tag) {
        memory::desc smd(d, dt::f32, src_tag), dmd({N, O, OH, OW}, dt::f32, dst_tag);
        auto desc = st.bias.defined() ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, smd,
                                                                        wmd, bmd, dmd, strides, dil, pad, pad)
                                      : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, smd,
                                                                        wmd, dmd, strides, dil, pad, pad);
        return dnnl::convolution_forward::primitive_desc(desc, attr, cpu_engine());
      };
      dnnl::convolution_forward::primitive_desc pd;
      bool have = false;
      // Winograd F(4x4, 3x3): about half the direct kernels' time on 3x3 stride-1 layers.
      if (KH == 3 && KW == 3 && st.stride[0] == 1 && st.stride[1] == 1 && st.dilation[0] == 1 &&
          st.dilation[1] == 1 && st.groups == 1 && C % 16 == 0 && O % 16 == 0) {
        try {
          pd = make(algorithm::convolution_winograd, tag::nChw16c, tag::nChw16c);
          have = true;
        } catch (const dnnl::error&) {
        }
      }
      if (!have) {
        pd = make(algorithm::convolution_direct, layout(C), layout(O));
        if (std::string(pd.impl_info_str()).find("ref") != std::string::npos)
          pd = make(algorithm::convolution_direct, tag::any, tag::any);
      }
      p->prim = dnnl::convolution_forward(pd);
      p->src = pd.src_desc();
      p->dst = pd.dst_desc();
      p->scratch = pd.scratchpad_desc();
      p->weights = pd.weights_desc();
      memory::desc user_w = st.groups == 1
                                ? memory::desc({O, I, KH, KW}, dt::f32, tag::oihw)
                                : memory::desc({st.groups, O / st.groups, I, KH, KW}, dt::f32, tag::goihw);
      // Shapes whose kernels read the same weight layout (most batch sizes) share one copy.
      for (const auto& q : st.prepared)
        if (q->weights == p->weights) p->wbuf = q->wbuf;
      if (!p->wbuf.defined()) {
        memory uw(user_w, cpu_engine(), st.weight.data_ptr());
        p->wbuf = reordered(uw, p->weights, alloc(p->weights), s).second;
      }
      if (st.bias.defined()) {
        p->bias = pd.bias_desc();
        memory ub(memory::desc({O}, dt::f32, tag::x), cpu_engine(), st.bias.data_ptr());
        p->bbuf = reordered(ub, p->bias, alloc(p->bias), s).second;
      }
      s.wait();
    } else {
      const int64_t N = d[0], C = d[1], H = d[2], W = d[3];
      std::vector<int64_t> k = st.kernel, stride = st.stride, pl = st.padding, pr = st.padding, o(2);
      const int64_t in[2] = {H, W};
      for (int i = 0; i < 2; ++i) {
        if (st.kind == Kind::AvgPool && !st.out_size.empty()) {  // adaptive: even windows only
          if (in[i] % st.out_size[i] != 0) throw std::runtime_error("oneDNN plan: uneven adaptive pooling");
          k[i] = stride[i] = in[i] / st.out_size[i];
          pl[i] = pr[i] = 0;
        }
        o[i] = (in[i] + 2 * pl[i] - k[i]) / stride[i] + 1;
        if (st.ceil_mode) {
          int64_t c = (in[i] + 2 * pl[i] - k[i] + stride[i] - 1) / stride[i] + 1;
          if ((c - 1) * stride[i] >= in[i] + pl[i]) --c;
          if (c > o[i]) {
            o[i] = c;
            pr[i] = (c - 1) * stride[i] + k[i] - in[i] - pl[i];
          }
        }
        if (o[i] <= 0) throw std::runtime_error("oneDNN plan: input smaller than a pooling window");
      }
      dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference,
                                       st.kind == Kind::MaxPool ? algorithm::pooling_max
                                                                : algorithm::pooling_avg_exclude_padding,
                                       src_md, memory::desc({N, C, o[0], o[1]}, dt::f32, tag::any),
                                       memory::dims(stride.begin(), stride.end()), memory::dims(k.begin(), k.end()),
                                       memory::dims(pl.begin(), pl.end()), memory::dims(pr.begin(), pr.end()));
      dnnl::pooling_forward::primitive_desc pd(desc, attr, cpu_engine());
      p->prim = dnnl::pooling_forward(pd);
      p->src = pd.src_desc();
      p->dst = pd.dst_desc();
      p->scratch = pd.scratchpad_desc();
    }
    st.prepared.push_back(p);
    return p;
  }

  void run_onednn(const Step& st, int index, std::vector<Val>& vals, dnnl::stream& s, uint64_t gen) const {
    Val& in = vals[st.in[0]];
    memory src = as_memory(in);
    auto p = prepare(st, in.md, s);
    at::Tensor src_hold;
    if (!(in.md == p->src)) std::tie(src, src_hold) = reordered(src, p->src, pool->take(p->src.get_size(), gen), s);
    at::Tensor out_buf;
    memory dst;
    if (st.sum >= 0) {
      Val& o = vals[st.sum];
      memory om = as_memory(o);
      if (o.md.dims() != p->dst.dims()) throw std::runtime_error("oneDNN plan: a residual sum's operands differ in shape");
      if (o.owned && o.md == p->dst && last_use[st.sum] == index && st.sum != st.in[0]) {
        out_buf = o.buf;  // the sum accumulates into the operand's own buffer
        dst = memory(p->dst, cpu_engine(), out_buf.data_ptr());
      } else {
        std::tie(dst, out_buf) = reordered(om, p->dst, pool->take(p->dst.get_size(), gen), s);
      }
    } else {
      out_buf = pool->take(p->dst.get_size(), gen);
      dst = memory(p->dst, cpu_engine(), out_buf.data_ptr());
    }
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    at::Tensor scratch;
    if (p->scratch.get_size() > 0) {
      scratch = pool->take(p->scratch.get_size(), gen);
      args.emplace(DNNL_ARG_SCRATCHPAD, memory(p->scratch, cpu_engine(), scratch.data_ptr()));
    }
    if (st.kind == Kind::Conv) {
      args.emplace(DNNL_ARG_WEIGHTS, memory(p->weights, cpu_engine(), p->wbuf.data_ptr()));
      if (p->bbuf.defined()) args.emplace(DNNL_ARG_BIAS, memory(p->bias, cpu_engine(), p->bbuf.data_ptr()));
    }
    p->prim.execute(s, args);
    Val out;
    out.mem = true;
    out.md = p->dst;
    out.buf = out_buf;
    out.owned = true;
    vals[st.out[0]] = std::move(out);
  }
};

OneDnnPlan::OneDnnPlan(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

bool onednn_plan_available() { return true; }

std::shared_ptr<OneDnnPlan> OneDnnPlan::build(const std::shared_ptr<torch::jit::Graph>& graph, std::string* why) {
  auto fail = [&](const std::string& reason) -> std::shared_ptr<OneDnnPlan> {
    if (why) *why = reason;
    return nullptr;
  };
  auto impl = std::make_unique<Impl>();
  impl->graph = graph;
  if (graph->inputs().size() != 2 || !graph->inputs()[0]->uses().empty())
    return fail("the graph does not take exactly one input besides the module");
  std::unordered_map<const torch::jit::Value*, int> index;
  auto id = [&](const torch::jit::Value* v) {
    auto it = index.find(v);
    if (it != index.end()) return it->second;
    index.emplace(v, impl->n_values);
    return impl->n_values++;
  };
  impl->input = id(graph->inputs()[1]);
  // The step whose output a value is, for fusing what follows into it.
  std::unordered_map<const torch::jit::Value*, Step*> made_by;
  auto read_later = [](torch::jit::Value* v, torch::jit::Node* n) {
    for (const auto& u : v->uses())
      if (u.user != n && n->isBefore(u.user)) return true;
    for (auto* o : n->owningGraph()->outputs())
      if (o == v) return true;
    return false;
  };
  for (torch::jit::Node* n : graph->nodes()) {
    if (!n->blocks().empty()) return fail("the graph has control flow (" + std::string(n->kind().toQualString()) + ")");
    if (n->kind() == c10::prim::Constant) {
      auto iv = torch::jit::toIValue(n->output());
      if (!iv) return fail("a constant has no value");
      impl->constants.emplace_back(id(n->output()), *iv);
      continue;
    }
    if (in_place(n) && !n->inputs().empty() && read_later(n->inputs()[0], n))
      return fail("an in-place " + std::string(n->kind().toQualString()) + " writes to a value read later");
    const std::string kind = n->kind().toQualString();
    auto single_use = [&](torch::jit::Value* v) { return v->uses().size() == 1 && !read_later(v, v->uses()[0].user); };
    // ReLU and residual sums after a convolution become its post-ops.
    if (kind == "aten::relu" || kind == "aten::relu_") {
      auto it = made_by.find(n->input(0));
      if (it != made_by.end() && it->second->kind == Kind::Conv && !it->second->relu && single_use(n->input(0))) {
        Step* c = it->second;
        c->relu = true;
        const int same = id(n->input(0));
        index[n->output()] = same;
        made_by[n->output()] = c;
        continue;
      }
    }
    if ((kind == "aten::add" || kind == "aten::add_") && n->inputs().size() == 3 && const_is(n->input(2), 1) &&
        n->input(0)->type()->cast<c10::TensorType>() && n->input(1)->type()->cast<c10::TensorType>()) {
      Step* best = nullptr;
      int other = -1;
      for (int k = 0; k < 2; ++k) {
        auto it = made_by.find(n->input(k));
        if (it == made_by.end()) continue;
        Step* c = it->second;
        torch::jit::Value* o = n->input(1 - k);
        const bool ready = o->node()->kind() == c10::prim::Param || o->node()->isBefore(c->node);
        if (c->kind != Kind::Conv || c->sum >= 0 || c->relu || !single_use(n->input(k)) || !ready) continue;
        if (!best || best->node->isBefore(c->node)) {
          best = c;
          other = id(o);
        }
      }
      if (best) {
        best->sum = other;
        const int same = best->out[0];
        index[n->output()] = same;
        made_by[n->output()] = best;
        continue;
      }
    }
    auto st = std::make_unique<Step>();
    st->node = n;
    if (kind == "aten::conv2d" || kind == "aten::_convolution") {
      const bool conv2d = kind == "aten::conv2d";
      auto w = const_tensor(n->input(1));
      auto b = torch::jit::toIValue(n->input(2));
      auto stride = int_list(n->input(3), 2), padding = int_list(n->input(4), 2), dilation = int_list(n->input(5), 2);
      auto groups = torch::jit::toIValue(n->input(conv2d ? 6 : 8));
      bool plain = conv2d || (const_bool(n->input(6), false) && int_list(n->input(7), 2) &&
                              *int_list(n->input(7), 2) == std::vector<int64_t>{0, 0});
      if (w && w->dim() == 4 && w->scalar_type() == at::kFloat && w->device().is_cpu() && b &&
          (b->isNone() || (b->isTensor() && b->toTensor().scalar_type() == at::kFloat)) && stride && padding &&
          dilation && groups && groups->isInt() && plain) {
        st->kind = Kind::Conv;
        st->weight = w->contiguous();
        if (b->isTensor()) st->bias = b->toTensor().contiguous();
        st->stride = *stride;
        st->padding = *padding;
        st->dilation = *dilation;
        st->groups = groups->toInt();
      }
    } else if (kind == "aten::max_pool2d") {
      auto k = int_list(n->input(1), 2), padding = int_list(n->input(3), 2), dilation = int_list(n->input(4), 2);
      auto s = torch::jit::toIValue(n->input(2));
      auto ceil = torch::jit::toIValue(n->input(5));
      std::optional<std::vector<int64_t>> stride =
          s && s->isIntList() && s->toIntVector().empty() ? k : int_list(n->input(2), 2);
      if (k && stride && padding && dilation && *dilation == std::vector<int64_t>{1, 1} && ceil && ceil->isBool()) {
        st->kind = Kind::MaxPool;
        st->kernel = *k;
        st->stride = *stride;
        st->padding = *padding;
        st->ceil_mode = ceil->toBool();
      }
    } else if (kind == "aten::adaptive_avg_pool2d") {
      auto o = int_list(n->input(1), 2);
      if (o && (*o)[0] > 0 && (*o)[1] > 0) {
        st->kind = Kind::AvgPool;
        st->out_size = *o;
        st->kernel = st->stride = {1, 1};
        st->padding = {0, 0};
      }
    }
    if (n->kind() != c10::prim::TupleConstruct && n->kind() != c10::prim::ListConstruct) {
      for (auto* v : n->inputs())
        if (v->node()->kind() != c10::prim::Constant || st->kind == Kind::Generic) st->in.push_back(id(v));
      if (st->kind != Kind::Generic) st->in.resize(1);
      for (auto* v : n->outputs()) st->out.push_back(id(v));
    }
    // The interpreter builds tuples and lists itself (no operator does).
    if (n->kind() == c10::prim::TupleConstruct) st->kind = Kind::Tuple;
    if (n->kind() == c10::prim::ListConstruct) st->kind = Kind::List;
    if (st->kind == Kind::Tuple || st->kind == Kind::List) {
      for (auto* v : n->inputs()) st->in.push_back(id(v));
      st->out.push_back(id(n->output()));
    } else if (st->kind == Kind::Generic) {
      if (!n->maybeOperator()) return fail("no operator runs " + kind);
      st->op = n->getOperation();
    } else {
      made_by[n->output()] = st.get();
    }
    impl->steps.push_back(std::move(st));
  }
  for (auto* v : graph->outputs()) impl->outputs.push_back(id(v));

  // Where plain ops read what the plan's own steps wrote, each read converts a blocked
  // tensor back to NCHW: allowed once, and after global pooling (a small tensor), and
  // where the graph returns values (a tuple of them: the caller wants them plain anyway).
  int convs = 0, crossings = 0;
  std::vector<const Step*> writer(impl->n_values, nullptr);
  auto returns = [&](const torch::jit::Node* n) {
    const auto k = n->kind();
    return (k == c10::prim::TupleConstruct || k == c10::prim::ListConstruct) && n->outputs().size() == 1 &&
           n->output()->uses().size() == 1 && n->output()->uses()[0].user == graph->return_node();
  };
  for (const auto& st : impl->steps) {
    if (st->kind == Kind::Conv) ++convs;
    if ((st->kind == Kind::Generic || st->kind == Kind::Tuple || st->kind == Kind::List) && !returns(st->node))
      for (int v : st->in)
        if (writer[v] && !(writer[v]->kind == Kind::AvgPool && writer[v]->out_size == std::vector<int64_t>{1, 1}))
          ++crossings;
    for (int v : st->out) writer[v] = st.get();
  }
  if (convs == 0) return fail("the graph has no convolution the plan runs");
  if (crossings > 1) return fail("ops outside the plan read its layouts " + std::to_string(crossings) + " times");

  impl->last_use.assign(impl->n_values, -1);
  for (size_t i = 0; i < impl->steps.size(); ++i) {
    const Step& st = *impl->steps[i];
    for (int v : st.in) impl->last_use[v] = static_cast<int>(i);
    if (st.sum >= 0) impl->last_use[st.sum] = static_cast<int>(i);
  }
  for (int v : impl->outputs) impl->last_use[v] = INT_MAX;
  for (size_t v = 0; v < impl->last_use.size(); ++v)
    if (impl->last_use[v] >= 0 && impl->last_use[v] != INT_MAX)
      impl->steps[impl->last_use[v]]->release.push_back(static_cast<int>(v));
  return std::shared_ptr<OneDnnPlan>(new OneDnnPlan(std::move(impl)));
}

c10::IValue OneDnnPlan::run(const at::Tensor& x) const {
  const Impl& p = *impl_;
  if (x.scalar_type() != at::kFloat || !x.device().is_cpu())
    throw std::runtime_error("oneDNN plan: runs float32 CPU tensors only");
  dnnl::stream s(cpu_engine());
  const uint64_t gen = p.pool->begin_run();
  std::vector<Val> vals(p.n_values);
  for (const auto& c : p.constants) vals[c.first].iv = c.second;
  vals[p.input].iv = x;
  try {
    for (size_t i = 0; i < p.steps.size(); ++i) {
      const Step& st = *p.steps[i];
      if (st.kind == Kind::Tuple || st.kind == Kind::List) {
        std::vector<c10::IValue> items;
        for (int v : st.in) items.push_back(p.as_ivalue(vals[v], s, gen));
        Val out;
        if (st.kind == Kind::Tuple) {
          out.iv = c10::ivalue::Tuple::create(std::move(items));
        } else {
          c10::impl::GenericList list(st.node->output()->type()->expectRef<c10::ListType>().getElementType());
          for (auto& item : items) list.push_back(std::move(item));
          out.iv = list;
        }
        vals[st.out[0]] = std::move(out);
      } else if (st.kind == Kind::Generic) {
        torch::jit::Stack stack;
        stack.reserve(st.in.size());
        for (int v : st.in) stack.push_back(p.as_ivalue(vals[v], s, gen));
        (*st.op)(stack);
        if (stack.size() != st.out.size()) throw std::runtime_error("oneDNN plan: an op returned a wrong count");
        for (size_t k = 0; k < st.out.size(); ++k) {
          vals[st.out[k]] = Val();
          vals[st.out[k]].iv = std::move(stack[k]);
        }
      } else {
        p.run_onednn(st, static_cast<int>(i), vals, s, gen);
      }
      for (int v : st.release) vals[v] = Val();
    }
    s.wait();
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN plan: ") + e.what());
  }
  std::vector<c10::IValue> out;
  for (int v : p.outputs) out.push_back(p.as_ivalue(vals[v], s, gen));
  return out.size() == 1 ? out[0] : c10::IValue(c10::ivalue::Tuple::create(std::move(out)));
}

void OneDnnPlan::release_buffers() const { impl_->pool->release_free(); }

int64_t OneDnnPlan::buffer_bytes() const { return static_cast<int64_t>(impl_->pool->held()); }

#endif

OneDnnPlan::~OneDnnPlan() = default;

}  // namespace model
}  // namespace salient

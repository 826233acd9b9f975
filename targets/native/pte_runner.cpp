// pte_runner: the native ExecuTorch runner. Same arguments, measurement semantics and one JSON line as the Python
// agent (edgecompress/device/agent.py, whose docstring has the long form); torch-free and Python-free, so a phone
// or a Pi runs it with the .so files beside it. Built by edgecompress/device/native.py.
//
//   pte_runner --model m.pte --io io.json --runtime executorch --threads 1 --warmup-runs 5 --runs 50
//
// Differences from the Python agent, on purpose:
//   "runner": "native"   so a result says which runner measured it; import_ms is 0 (nothing to import).
//   random inputs        the same id range ([min(1000, vocab-1), vocab), mask ones, token types zeros) but drawn with
//                        SplitMix64(seed), not Python's Mersenne Twister: same distribution, different ids. Where
//                        identical inputs matter, pass --inputs, or an --expected file that carries its inputs
//                        (the pipeline's always does; one without is refused rather than checked on other ids).
//   --threads            resizes ExecuTorch's shared thread pool, as the Python runtime's _unsafe_reset_threadpool
//                        does (see et_threadpool.h); the size read back is reported in runtime_threads.
//   load                 the program is mmap'ed (ExecuTorch's Module with LoadMode::Mmap, what an app does).
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "et_threadpool.h"
#include "mini_json.h"
#include "runner_common.h"

using executorch::extension::TensorPtr;
using executorch::extension::module::Module;
using executorch::runtime::EValue;
namespace et = executorch::runtime;
namespace ea = executorch::aten;

namespace {

constexpr const char* kEnvKnobs[] = {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                     "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "GOMP_CPU_AFFINITY"};

struct Feed {  // the tensors of one sample, made before timing; values point into tensors
  std::vector<TensorPtr> tensors;
  std::vector<EValue> values;
};

struct Program {
  std::unique_ptr<Module> module;
  std::vector<int64_t> max_sizes;  // upper bounds of input 0 (batch, seq), for a readable shape error
  long threads = 0;
};

Program load_program(const std::string& path, int threads) {
  Program p;
  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (pool != nullptr) {
    pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));
    p.threads = static_cast<long>(pool->get_thread_count());
  }
  p.module = std::make_unique<Module>(path, Module::LoadMode::Mmap);
  et::Error err = p.module->load_method("forward");
  if (err != et::Error::Ok)
    throw AgentError(std::string("loading method forward failed: ") + et::to_string(err) + " (0x" +
                     hex(static_cast<unsigned>(err)) + ")");
  auto meta = p.module->method_meta("forward");
  if (meta.ok() && meta->num_inputs() > 0) {
    auto info = meta->input_tensor_meta(0);
    if (info.ok())
      for (auto s : info->sizes()) p.max_sizes.push_back(s);
  }
  return p;
}

Feed prepare(const Sample& sample, const IoSpec& io) {
  Feed f;
  for (const Matrix& m : sample) {
    std::vector<ea::SizesType> sizes = {static_cast<ea::SizesType>(m.rows), static_cast<ea::SizesType>(m.cols)};
    if (io.input_dtype == "int32") {
      std::vector<int32_t> v(m.data.begin(), m.data.end());
      f.tensors.push_back(executorch::extension::make_tensor_ptr(std::move(sizes), std::move(v)));
    } else {
      f.tensors.push_back(executorch::extension::make_tensor_ptr(std::move(sizes), m.data));
    }
  }
  for (auto& t : f.tensors) f.values.emplace_back(*t);
  return f;
}

// One inference; the output stays in the program's planned memory (read with to_rows only when needed).
std::vector<EValue> run(Program& p, const Feed& feed) {
  auto r = p.module->execute("forward", feed.values);
  if (!r.ok()) {
    std::string msg = std::string("execute failed: ") + et::to_string(r.error()) + " (0x" +
                      hex(static_cast<unsigned>(r.error())) + ")";
    if (!p.max_sizes.empty() && feed.tensors.size() > 0) {
      msg += "; input shape [" + std::to_string(feed.tensors[0]->size(0)) + ", " +
             std::to_string(feed.tensors[0]->size(1)) + "], the program's upper bounds [";
      for (size_t i = 0; i < p.max_sizes.size(); ++i) msg += (i ? ", " : "") + std::to_string(p.max_sizes[i]);
      msg += "]";
    }
    throw AgentError(msg);
  }
  return std::move(r.get());
}

Rows to_rows(const std::vector<EValue>& out) {
  if (out.empty() || !out[0].isTensor()) throw AgentError("forward returned no tensor");
  const ea::Tensor& t = out[0].toTensor();
  size_t n = static_cast<size_t>(t.numel());
  size_t cols = t.dim() >= 1 ? static_cast<size_t>(t.size(t.dim() - 1)) : n;
  std::vector<double> flat(n);
  if (t.scalar_type() == ea::ScalarType::Float) {
    const float* d = t.const_data_ptr<float>();
    std::copy(d, d + n, flat.begin());
  } else if (t.scalar_type() == ea::ScalarType::Double) {
    const double* d = t.const_data_ptr<double>();
    std::copy(d, d + n, flat.begin());
  } else {
    throw AgentError("output dtype " + std::to_string(static_cast<int>(t.scalar_type())) + " is not float");
  }
  Rows rows;
  for (size_t i = 0; cols > 0 && i < n; i += cols) rows.emplace_back(flat.begin() + i, flat.begin() + i + cols);
  return rows;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Inputs {
  std::vector<Sample> samples;
  long batch = 0, seq_len = 0;
  std::string label;
};

Inputs choose_inputs(const Args& a, const IoSpec& io) {
  Inputs in;
  if (!a.inputs.empty()) {
    in.samples = read_samples(a.inputs, io);
    in.batch = in.samples[0][0].rows, in.seq_len = in.samples[0][0].cols;
    in.label = "samples";
  } else {
    long seq = a.seq_len > 0 ? a.seq_len : std::min(kDefaultSeqLen, io.max_seq_len);
    in.samples.push_back(random_inputs(io, a.batch, seq, a.seed));
    in.batch = a.batch, in.seq_len = seq;
    in.label = "random(seed=" + std::to_string(a.seed) + ",rng=splitmix64)";
  }
  return in;
}

// --predict: one pass over the real samples before warmup; the host compares these labels with its own.
void predict(Program& p, const std::vector<Feed>& feeds, mini_json::Writer& w) {
  auto t0 = Clock::now();
  Rows logits;
  for (const Feed& f : feeds)
    for (auto& row : to_rows(run(p, f))) logits.push_back(std::move(row));
  double secs = ms_since(t0) / 1e3;
  std::string preds = "[", rows = "[";
  for (size_t i = 0; i < logits.size(); ++i) {
    preds += (i ? "," : "") + std::to_string(argmax(logits[i]));
    rows += i ? ",[" : "[";
    for (size_t j = 0; j < logits[i].size(); ++j)
      rows += (j ? "," : "") + mini_json::number(mini_json::round_to(logits[i][j], 6));
    rows += "]";
  }
  w.raw("predictions", preds + "]").raw("logits", rows + "]").num("predict_s", mini_json::round_to(secs, 3));
}

std::vector<double> measure(Program& p, const std::vector<Feed>& feeds, const Args& a, double* measure_s) {
  for (int i = 0; i < a.warmup_runs; ++i) run(p, feeds[i % feeds.size()]);
  std::vector<double> times;
  auto start = Clock::now();
  while (static_cast<long>(times.size()) < a.runs || ms_since(start) / 1e3 < a.min_time_s) {
    const Feed& f = feeds[times.size() % feeds.size()];
    auto t0 = Clock::now();
    run(p, f);
    times.push_back(ms_since(t0));
  }
  *measure_s = ms_since(start) / 1e3;
  return times;
}

void describe_host(mini_json::Writer& w, const std::string& pinned, long threads) {
  w.raw("runtime_threads", "{\"threadpool_threads\":" + std::to_string(threads) + "}");
  w.raw("cpu_list", pinned.empty() ? "null" : pinned);
  mini_json::Writer env;
  for (const char* k : kEnvKnobs)
    if (const char* v = std::getenv(k)) env.str(k, v);
  w.raw("env", env.text());
  // Set by an emulating transport (qemu-arm64): latency measured under emulation is not a device figure.
  const char* emulator = std::getenv("EDGECOMPRESS_EMULATOR");
  bool emulated = emulator != nullptr && *emulator != '\0';
  w.boolean("emulated", emulated);
  if (emulated) w.str("emulator", emulator);
  struct utsname u {};
  uname(&u);
  w.str("machine", u.machine).str("system", std::strcmp(u.sysname, "Linux") == 0 ? "Linux" : u.sysname);
  w.str("release", u.release).str("node", u.nodename).integer("cpu_count", sysconf(_SC_NPROCESSORS_ONLN));
}

std::string bench(const Args& a) {
  IoSpec io = read_io(a.io);
  std::string pinned = a.cpu_list.empty() ? "" : pin_cpus(a.cpu_list);
  Inputs in = choose_inputs(a, io);
  mini_json::Value expected;
  if (!a.expected.empty()) expected = read_json(a.expected);

  auto t0 = Clock::now();
  Program p = load_program(a.model, a.threads);
  double load_ms = ms_since(t0);

  std::vector<Feed> feeds;
  for (const Sample& s : in.samples) feeds.push_back(prepare(s, io));
  Feed first_feed = a.expected.empty() ? prepare(in.samples[0], io) : prepare(expected_sample(expected, io), io);
  t0 = Clock::now();
  std::vector<EValue> first_out = run(p, first_feed);
  double first_ms = ms_since(t0);
  std::string check = a.expected.empty() ? "" : check_expected(expected, to_rows(first_out));

  mini_json::Writer pred;
  if (a.predict) predict(p, feeds, pred);
  double measure_s = 0;
  std::vector<double> times = measure(p, feeds, a, &measure_s);

  long long file_bytes = file_size(a.model);
  for (const auto& x : a.extra_files) file_bytes += file_size(x);
  mini_json::Writer w;
  w.boolean("ok", true).str("runner", "native").integer("agent_version", kProtocolVersion);
  w.str("runtime", "executorch").str("runtime_version", EDGECOMPRESS_ET_VERSION).str("model", base_name(a.model));
  w.num("file_mb", mini_json::round_to(file_bytes / 1048576.0, 3)).integer("batch", in.batch);
  w.integer("seq_len", in.seq_len).integer("threads", a.threads).integer("warmup_runs", a.warmup_runs);
  w.num("min_time_s", a.min_time_s).str("inputs", in.label).num("import_ms", 0.0).str("load_mode", "mmap");
  w.num("load_ms", mini_json::round_to(load_ms, 3)).num("first_inference_ms", mini_json::round_to(first_ms, 3));
  summarize(times, w);
  w.num("measure_s", mini_json::round_to(measure_s, 3)).raw("peak_rss_mb", peak_rss_mb_json());
  w.str("peak_rss_includes", "runtime + model (no interpreter)");
  describe_host(w, pinned, p.threads);
  if (!check.empty()) w.raw("expected_check", check);
  return w.merge(pred).text();
}

}  // namespace

int main(int argc, char** argv) {
  // The contract is exactly one JSON line on stdout; ExecuTorch logs and anything else written to fd 1 go to
  // stderr while the runner works, and the JSON goes to the saved stdout at the end.
  std::fflush(stdout);
  int saved = dup(1);
  dup2(2, 1);
  std::string line;
  int code = 0;
  try {
    line = bench(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s\n%s", e.what(), kUsage);
    line = mini_json::Writer().boolean("ok", false).str("error", std::string("bad arguments: ") + e.what())
               .str("runner", "native").text();
    code = 2;
  } catch (const std::exception& e) {  // AgentError, JSON and file errors: all reported as data
    line = mini_json::Writer().boolean("ok", false).str("error", e.what()).str("runner", "native").text();
    code = 1;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  line += "\n";
  ssize_t ignored = write(saved, line.data(), line.size());
  (void)ignored;
  return code;
}

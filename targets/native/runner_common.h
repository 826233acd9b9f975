// The runtime-independent half of a native runner: the protocol's arguments, io.json, inputs, the expected-output
// check, statistics and memory, each a line-for-line port of the Python agent (edgecompress/device/agent.py) so
// both runners mean the same thing by every field. No ExecuTorch here: a second native runner (another runtime)
// would include this file as it is.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mini_json.h"

// Set by edgecompress/device/native.py at build time: the executorch wheel's version, and the Python agent's
// AGENT_VERSION (the protocol both runners speak), read from agent.py so the two cannot drift apart.
#ifndef EDGECOMPRESS_ET_VERSION
#define EDGECOMPRESS_ET_VERSION "unknown"
#endif
#ifndef EDGECOMPRESS_PROTOCOL_VERSION
#define EDGECOMPRESS_PROTOCOL_VERSION 0
#endif

using Clock = std::chrono::steady_clock;
using Rows = std::vector<std::vector<double>>;

constexpr int kProtocolVersion = EDGECOMPRESS_PROTOCOL_VERSION;
constexpr const char* kUsage =
    "usage: pte_runner --model M --io IO --runtime executorch [--threads N] [--warmup-runs N] [--runs N]\n"
    "       [--min-time-s S] [--batch N] [--seq-len N] [--seed N] [--inputs F] [--expected F] [--predict]\n"
    "       [--extra-file F]... [--cpu-list LIST]\n";

struct AgentError : std::runtime_error {  // reported as {"ok": false, "error": ...}, exit 1
  using std::runtime_error::runtime_error;
};
struct UsageError : std::runtime_error {  // bad arguments, exit 2 (argparse's code)
  using std::runtime_error::runtime_error;
};

// The measurement defaults, as edgecompress.device.protocol.BenchSettings declares them
// (tests/device/test_bench_settings.py keeps them equal).
constexpr int kDefaultThreads = 1, kDefaultWarmupRuns = 5;
constexpr long kDefaultRuns = 50, kDefaultBatch = 1, kDefaultSeqLen = 128;

struct Args {
  std::string model, io, runtime, inputs, expected, cpu_list;
  int threads = kDefaultThreads, warmup_runs = kDefaultWarmupRuns;
  long runs = kDefaultRuns, batch = kDefaultBatch, seq_len = 0, seed = 0;  // seq_len 0: min(kDefaultSeqLen, io.json max_seq_len)
  double min_time_s = 0.0;
  bool predict = false;
  std::vector<std::string> extra_files;
};

struct IoSpec {
  long vocab_size = 0, max_seq_len = kDefaultSeqLen;
  std::vector<std::string> input_names;
  std::string input_dtype = "int64";
};

struct Matrix {  // one input: rows x cols token ids, row-major
  long rows = 0, cols = 0;
  std::vector<int64_t> data;
};
using Sample = std::vector<Matrix>;  // in io.json input_names order

inline std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x", v);
  return buf;
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw AgentError("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A file's JSON, or an error naming the file (the parser alone only knows the byte offset).
inline mini_json::Value read_json(const std::string& path) {
  std::string text = read_text(path);
  try {
    return mini_json::parse(text);
  } catch (const std::runtime_error& e) {
    throw AgentError(path + ": " + e.what());
  }
}

inline long long file_size(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw AgentError("file not found: " + path);
  return static_cast<long long>(st.st_size);
}

inline std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// ---------------------------------------------------------------- arguments

inline long to_long(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') throw UsageError(flag + ": invalid int value '" + v + "'");
  return n;
}

inline void set_arg(Args& a, const std::string& flag, const std::string& v) {
  if (flag == "--model") a.model = v;
  else if (flag == "--io") a.io = v;
  else if (flag == "--runtime") a.runtime = v;
  else if (flag == "--threads") a.threads = static_cast<int>(to_long(flag, v));
  else if (flag == "--warmup-runs") a.warmup_runs = static_cast<int>(to_long(flag, v));
  else if (flag == "--runs") a.runs = to_long(flag, v);
  else if (flag == "--batch") a.batch = to_long(flag, v);
  else if (flag == "--seq-len") a.seq_len = to_long(flag, v);
  else if (flag == "--seed") a.seed = to_long(flag, v);
  else if (flag == "--inputs") a.inputs = v;
  else if (flag == "--expected") a.expected = v;
  else if (flag == "--extra-file") a.extra_files.push_back(v);
  else if (flag == "--cpu-list") a.cpu_list = v;
  else if (flag == "--min-time-s") {
    char* end = nullptr;
    a.min_time_s = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') throw UsageError(flag + ": invalid float value '" + v + "'");
  } else throw UsageError("unrecognized argument " + flag);
}

// argparse's forms: --flag value and --flag=value. Range checks are the Python agent's, in its order.
inline Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--predict") {
      a.predict = true;
      continue;
    }
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      set_arg(a, arg.substr(0, eq), arg.substr(eq + 1));
    } else {
      if (i + 1 >= argc) throw UsageError(arg + ": expected one argument");
      set_arg(a, arg, argv[++i]);
    }
  }
  if (a.model.empty() || a.io.empty() || a.runtime.empty())
    throw UsageError("the following arguments are required: --model, --io, --runtime");
  if (a.runtime != "executorch")
    throw UsageError("--runtime: invalid choice '" + a.runtime + "' (the native runner runs executorch)");
  if (a.threads < 1) throw AgentError("--threads must be >= 1, got " + std::to_string(a.threads));
  if (a.runs < 1) throw AgentError("--runs must be >= 1, got " + std::to_string(a.runs));
  if (a.batch < 1) throw AgentError("--batch must be >= 1, got " + std::to_string(a.batch));
  if (a.warmup_runs < 0 || a.min_time_s < 0)
    throw AgentError("--warmup-runs and --min-time-s must be >= 0, got " + std::to_string(a.warmup_runs) + ", " +
                     mini_json::number(a.min_time_s));
  if (a.seq_len < 0) throw AgentError("--seq-len must be >= 1, got " + std::to_string(a.seq_len));
  struct stat st {};
  if (stat(a.model.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw AgentError("model file not found: " + a.model);
  if (a.predict && a.inputs.empty()) throw AgentError("--predict needs --inputs (the samples whose labels are wanted)");
  return a;
}

// ---------------------------------------------------------------- io.json and inputs

inline IoSpec read_io(const std::string& path) {
  mini_json::Value v = read_json(path);
  IoSpec io;
  const mini_json::Value* vocab = v.get("vocab_size");
  const mini_json::Value* names = v.get("input_names");
  if (vocab == nullptr || names == nullptr || names->type != mini_json::Value::Arr)
    throw AgentError(path + ": needs vocab_size and input_names");
  io.vocab_size = static_cast<long>(vocab->num);
  for (const auto& n : names->items) io.input_names.push_back(n.str);
  if (const auto* m = v.get("max_seq_len"); m && m->type == mini_json::Value::Num) io.max_seq_len = long(m->num);
  if (const auto* d = v.get("input_dtype"); d && d->type == mini_json::Value::Str) io.input_dtype = d->str;
  if (io.input_dtype != "int64" && io.input_dtype != "int32")
    throw AgentError(path + ": input_dtype " + io.input_dtype + " is not int64 or int32");
  return io;
}

inline Matrix to_matrix(const mini_json::Value& v, const std::string& name) {
  Matrix m;
  bool ok = v.type == mini_json::Value::Arr && !v.packed && !v.items.empty();
  for (size_t r = 0; ok && r < v.items.size(); ++r) {
    const mini_json::Value& row = v.items[r];
    ok = row.type == mini_json::Value::Arr && row.packed && !row.nums.empty();
    if (ok && r == 0) m.cols = static_cast<long>(row.nums.size());
    ok = ok && static_cast<long>(row.nums.size()) == m.cols;
    for (size_t c = 0; ok && c < row.nums.size(); ++c) m.data.push_back(static_cast<int64_t>(row.nums[c]));
  }
  if (!ok) throw AgentError("input " + name + " must be a non-empty list of equal-length rows of integers");
  m.rows = static_cast<long>(v.items.size());
  return m;
}

// {name: [[...]]} -> Sample, or an error naming what is missing (the Python agent's message).
inline Sample to_sample(const mini_json::Value& s, const IoSpec& io, const std::string& where) {
  std::string missing;
  for (const auto& n : io.input_names)
    if (s.type != mini_json::Value::Obj || s.get(n) == nullptr) missing += (missing.empty() ? "'" : ", '") + n + "'";
  if (!missing.empty()) throw AgentError(where + " lacks inputs [" + missing + "]");
  Sample out;
  for (const auto& n : io.input_names) out.push_back(to_matrix(*s.get(n), n));
  return out;
}

// --inputs: {name: [[...]]} or a list of such dicts (real tokenized samples), cycled over the runs.
inline std::vector<Sample> read_samples(const std::string& path, const IoSpec& io) {
  mini_json::Value data = read_json(path);
  std::vector<Sample> samples;
  if (data.type == mini_json::Value::Arr) {
    if (data.size() == 0) throw AgentError(path + ": no samples");
    if (data.packed) throw AgentError(path + ": expected a dict of inputs or a list of them");
    for (size_t i = 0; i < data.items.size(); ++i)
      samples.push_back(to_sample(data.items[i], io, path + ": sample " + std::to_string(i)));
  } else {
    samples.push_back(to_sample(data, io, path + ": sample 0"));
  }
  return samples;
}

// SplitMix64: fully specified (unlike std::uniform_int_distribution), so every libstdc++/libc++ build of the
// runner draws the same ids for a seed. Modulo bias over a ~30k range is < 1e-14: irrelevant to latency.
inline Sample random_inputs(const IoSpec& io, long batch, long seq_len, long seed) {
  uint64_t state = static_cast<uint64_t>(seed);
  auto next = [&state]() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  long low = std::min(1000L, io.vocab_size - 1);  // never BERT's special ids, so no accidental [PAD]
  uint64_t span = static_cast<uint64_t>(std::max(1L, io.vocab_size - low));
  Sample out;
  for (const auto& name : io.input_names) {
    Matrix m{batch, seq_len, std::vector<int64_t>(static_cast<size_t>(batch * seq_len))};
    for (auto& v : m.data) {
      if (name.find("mask") != std::string::npos) v = 1;
      else if (name.find("token_type") != std::string::npos) v = 0;
      else v = low + static_cast<int64_t>(next() % span);
    }
    out.push_back(std::move(m));
  }
  return out;
}

inline Sample expected_sample(const mini_json::Value& expected, const IoSpec& io) {
  const mini_json::Value* inputs = expected.get("inputs");
  if (inputs == nullptr)
    throw AgentError("expected.json has no inputs; the native runner cannot redraw Python's random ids from a seed, "
                     "so write the inputs into expected.json");
  return to_sample(*inputs, io, "expected.json inputs");
}

// ---------------------------------------------------------------- expected-output check

inline size_t argmax(const std::vector<double>& row) {  // the first maximum, like Python's max(key=...)
  return static_cast<size_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

inline std::string fmt(const char* spec, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

inline std::string row_lengths(const Rows& rows) {
  std::string s = "[";
  for (size_t i = 0; i < rows.size(); ++i) s += (i ? ", " : "") + std::to_string(rows[i].size());
  return s + "]";
}

inline const mini_json::Value* field(const mini_json::Value& v, const char* key) {  // JSON null reads as absent
  const mini_json::Value* f = v.get(key);
  return f != nullptr && f->type != mini_json::Value::Null ? f : nullptr;
}

// Compares the first inference with reference logits; returns {max_abs_diff, argmax_agreement} as JSON, throws
// AgentError on a mismatch. A mismatch is an error, not a number: a runtime returning zeros is fast.
inline std::string check_expected(const mini_json::Value& expected, const Rows& got) {
  Rows want;
  if (const mini_json::Value* l = expected.get("logits"); l && l->type == mini_json::Value::Arr && !l->packed)
    for (const auto& row : l->items) want.push_back(row.nums);
  else throw AgentError("expected.json has no logits rows");
  bool same = want.size() == got.size();
  for (size_t i = 0; same && i < want.size(); ++i) same = want[i].size() == got[i].size();
  if (!same) throw AgentError("output shape " + row_lengths(got) + " != expected " + row_lengths(want));
  bool all_zero = true, want_nonzero = false;
  double max_abs = 0;
  size_t agree_n = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    for (size_t j = 0; j < got[i].size(); ++j) {
      if (!std::isfinite(got[i][j])) throw AgentError("output mismatch: runtime returned NaN/inf");
      all_zero = all_zero && got[i][j] == 0.0;
      want_nonzero = want_nonzero || want[i][j] != 0.0;
      max_abs = std::max(max_abs, std::fabs(got[i][j] - want[i][j]));
    }
    agree_n += argmax(got[i]) == argmax(want[i]);
  }
  if (all_zero && want_nonzero) throw AgentError("output mismatch: runtime returned all zeros");
  double agree = want.empty() ? 1.0 : double(agree_n) / double(want.size());
  const mini_json::Value* atol = field(expected, "atol");
  const mini_json::Value* min_agree_v = field(expected, "min_argmax_agreement");
  const mini_json::Value* must = field(expected, "argmax_must_match");
  double tol = atol ? atol->num : (min_agree_v || (must && must->b) ? -1.0 : 1e-3);
  double min_agree = (must && must->b) ? 1.0 : (min_agree_v ? min_agree_v->num : -1.0);
  if (tol >= 0 && max_abs > tol)
    throw AgentError("output mismatch: max abs diff " + fmt("%.4g", max_abs) + " > atol " + mini_json::number(tol) +
                     " (argmax agreement " + fmt("%.3f", agree) + ")");
  if (min_agree >= 0 && agree < min_agree)
    throw AgentError("output mismatch: argmax agreement " + fmt("%.3f", agree) + " < " + mini_json::number(min_agree) +
                     " (max abs diff " + fmt("%.4g", max_abs) + ")");
  return mini_json::Writer().num("max_abs_diff", mini_json::round_to(max_abs, 6))
      .num("argmax_agreement", mini_json::round_to(agree, 4)).text();
}

// ---------------------------------------------------------------- statistics, memory, CPUs

// numpy.percentile(values, q) with the default method='linear': rank (n-1)*q/100, interpolated.
inline double percentile(std::vector<double> s, double q) {
  std::sort(s.begin(), s.end());
  double pos = (static_cast<double>(s.size()) - 1) * q / 100.0;
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, s.size() - 1);
  return s[lo] + (s[hi] - s[lo]) * (pos - static_cast<double>(lo));
}

inline void summarize(const std::vector<double>& t, mini_json::Writer& w) {
  double n = static_cast<double>(t.size()), mean = 0, var = 0;
  for (double v : t) mean += v / n;
  for (double v : t) var += (v - mean) * (v - mean) / n;  // ddof=0, like numpy.std
  auto r = [](double v) { return mini_json::round_to(v, 4); };
  w.num("p50_ms", r(percentile(t, 50))).num("p90_ms", r(percentile(t, 90))).num("p99_ms", r(percentile(t, 99)));
  w.num("mean_ms", r(mean)).num("std_ms", r(std::sqrt(var)));
  w.num("min_ms", r(*std::min_element(t.begin(), t.end()))).num("max_ms", r(*std::max_element(t.begin(), t.end())));
  w.integer("runs", static_cast<long long>(t.size()));
}

// Peak resident set size of this process in MiB (VmHWM, the RSS high-water mark in kB), as JSON.
inline std::string peak_rss_mb_json() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0)
      return mini_json::number(mini_json::round_to(std::atol(line.c_str() + 6) / 1024.0, 2));
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) == 0) return mini_json::number(mini_json::round_to(ru.ru_maxrss / 1024.0, 2));
  return "null";
}

// --cpu-list '4-7,9' (the taskset/cpuset syntax): pins this process, returns the CPUs it now has as JSON.
inline std::string pin_cpus(const std::string& text) {
  std::set<int> cpus;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.find_first_not_of(' ') == std::string::npos) continue;
    char* end = nullptr;
    long a = std::strtol(part.c_str(), &end, 10), b = a;
    if (*end == '-') b = std::strtol(end + 1, &end, 10);
    if (*end != '\0' && *end != ' ') throw AgentError("--cpu-list '" + text + "' is not a CPU list");
    for (long c = a; c <= b && c < CPU_SETSIZE; ++c) cpus.insert(static_cast<int>(c));
  }
  if (cpus.empty()) throw AgentError("--cpu-list '" + text + "' names no CPU");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    throw AgentError("--cpu-list '" + text + "': sched_setaffinity failed");
  sched_getaffinity(0, sizeof set, &set);
  std::string out = "[";
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out += (out.size() > 1 ? "," : "") + std::to_string(c);
  return out + "]";
}

// `xsam_runner bench`: the harness's JSON schema (xsam_edge/bench/harness.py, format "xsam_edge-bench" v1) from
// the native core, so a phone's numbers (adb push + adb shell) land in the same report as the Python backends'.
// Requests: the bundle's golden requests (or --requests); accuracy: mask agreement with the golden masks (the
// bundle's golden vectors hold no ground truth, so task metrics are left empty).
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <thread>

#include "golden.hpp"
#include "runner_io.hpp"
#include "xsam/session.hpp"

#ifndef XSAM_EXECUTORCH_VERSION
#define XSAM_EXECUTORCH_VERSION "unknown"
#endif

namespace xsam {
namespace {

const char* const kStages[] = {"encode", "embed", "region", "prefill", "decode", "segment", "host"};

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// numpy.percentile's default (linear interpolation between closest ranks)
double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = (static_cast<double>(v.size()) - 1) * q / 100.0;
  size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

Json Stats(const std::vector<double>& seconds) {
  std::vector<double> ms;
  double sum = 0;
  for (double s : seconds) {
    ms.push_back(s * 1e3);
    sum += s * 1e3;
  }
  Json j = Json::object();
  j.set("p50_ms", ms.empty() ? 0.0 : Percentile(ms, 50));
  j.set("p90_ms", ms.empty() ? 0.0 : Percentile(ms, 90));
  j.set("mean_ms", ms.empty() ? 0.0 : sum / static_cast<double>(ms.size()));
  j.set("n", ms.size());
  return j;
}

std::string CpuName() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, hardware;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    if (line.rfind("Hardware", 0) == 0) hardware = line.substr(line.find(':') + 2);
  }
  struct utsname u;
  return !hardware.empty() ? hardware : (uname(&u) == 0 ? u.machine : "unknown");
}

Json MachineFacts() {
  struct utsname u;
  uname(&u);
  Json runtimes = Json::object();
  runtimes.set("executorch", XSAM_EXECUTORCH_VERSION);
  runtimes.set("xsam_native", "1");
  Json m = Json::object();
  m.set("cpu", CpuName());
  m.set("cores", static_cast<int64_t>(std::thread::hardware_concurrency()));
  m.set("os", std::string(u.sysname) + " " + u.release);
  m.set("arch", u.machine);
  m.set("python", Json());
  m.set("threads", static_cast<int64_t>(std::thread::hardware_concurrency()));  // ExecuTorch's default pool
  m.set("runtimes", runtimes);
  return m;
}

int64_t PeakRssBytes() {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return static_cast<int64_t>(r.ru_maxrss) * 1024;  // KiB on Linux and Android
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

double Iou(const std::vector<uint8_t>& a, const std::vector<float>& b, size_t offset) {
  size_t inter = 0, uni = 0;
  for (size_t p = 0; p < a.size(); ++p) {
    bool x = a[p] != 0, y = b[offset + p] != 0;
    inter += x && y;
    uni += x || y;
  }
  return uni ? static_cast<double>(inter) / uni : 1.0;
}

}  // namespace

int RunBench(const Args& args) {
  if (!args.has("bundle") || !args.has("out")) {
    std::fprintf(stderr, "error: bench needs --bundle and --out\n");
    return 2;
  }
  const int repeats = std::stoi(args.get("repeats", "1")), warmup = std::stoi(args.get("warmup", "1"));
  SessionOptions options;
  options.verify_checksums = !args.has("no-verify");
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Session> session;
  Status st = Session::Open(args.get("bundle"), options, &session);
  const double load_s = Seconds(t0, std::chrono::steady_clock::now());
  std::vector<GoldenCase> cases;
  if (st.ok()) {
    if (args.has("requests")) {
      const std::string path = args.get("requests");
      const std::string root = path.rfind('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
      std::string text;
      Json doc;
      st = ReadFile(path, &text);
      if (st.ok()) st = Json::Parse(text, &doc);
      for (size_t i = 0; st.ok() && i < doc["requests"].size(); ++i) {
        cases.emplace_back();
        st = RequestFromJson(doc["requests"][i], root, &cases.back().request);
      }
    } else {
      st = LoadGolden(session->manifest().root + "/golden", &cases);
    }
  }
  if (st.ok() && cases.empty()) st = InvalidArgument("no requests to bench");
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 2;
  }

  std::map<std::string, std::vector<double>> calls;
  std::map<std::string, int64_t> nonfinite;
  bool enabled = false;
  int64_t decode_tokens = 0;
  session->engine().set_observer([&](const std::string& name, double seconds, bool bad) {
    if (bad) ++nonfinite[name];
    if (!enabled) return;
    calls[name].push_back(seconds);
    decode_tokens += name == "llm_decode";
  });
  Result result;
  for (int i = 0; i < warmup && i < static_cast<int>(cases.size()); ++i) {
    session->ClearImage();
    st = session->Segment(cases[i].request, &result);
    if (!st.ok()) break;
  }
  std::vector<double> first, next, totals;
  std::vector<Result> results(cases.size());
  for (int r = 0; st.ok() && r < repeats; ++r) {
    for (size_t i = 0; st.ok() && i < cases.size(); ++i) {
      session->ClearImage();
      enabled = true;
      auto a = std::chrono::steady_clock::now();
      st = session->Segment(cases[i].request, &result);
      auto b = std::chrono::steady_clock::now();
      if (st.ok()) st = session->Segment(cases[i].request, &result);  // same image: only the query's tokens
      auto c = std::chrono::steady_clock::now();
      enabled = false;
      first.push_back(Seconds(a, b));
      next.push_back(Seconds(b, c));
      totals.push_back(Seconds(a, c));
      if (r == 0) results[i] = result;
    }
  }
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 2;
  }

  Json graphs = Json::object();
  std::map<std::string, double> stage_s;
  double graph_total = 0, all_total = 0, decode_s = 0;
  for (const auto& kv : calls) {
    graphs.set(kv.first, Stats(kv.second));
    double sum = 0;
    for (double s : kv.second) sum += s;
    std::string stage = kv.first == "encode_image" ? "encode" : kv.first == "llm_decode" ? "decode"
                        : kv.first == "llm_prefill" ? "prefill" : kv.first;
    stage_s[stage] += sum;
    graph_total += sum;
    if (kv.first == "llm_decode") decode_s += sum;
  }
  for (double t : totals) all_total += t;
  stage_s["host"] = std::max(all_total - graph_total, 0.0);
  Json stages = Json::object();
  const double queries = 2.0 * static_cast<double>(totals.size());
  for (const char* s : kStages) stages.set(s, stage_s[s] / queries * 1e3);

  // accuracy: masks against the golden ones, paired in order (golden masks carry no label ids)
  double union_sum = 0, matched_sum = 0, matched_n = 0, count_match = 0;
  size_t compared = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    auto it = cases[i].outputs.find("masks");
    if (it == cases[i].outputs.end()) continue;
    const NpyArray& ref = it->second;
    std::vector<float> want = ref.AsFloats();
    const Result& got = results[i];
    const size_t n = static_cast<size_t>(got.height) * got.width, k_ref = ref.shape.empty() ? 0 : static_cast<size_t>(ref.shape[0]);
    ++compared;
    count_match += got.masks.size() == k_ref;
    std::vector<uint8_t> ua(n, 0);
    std::vector<float> ub(n, 0);
    for (const auto& m : got.masks) for (size_t p = 0; p < n; ++p) ua[p] |= m[p];
    for (size_t k = 0; k < k_ref; ++k) for (size_t p = 0; p < n; ++p) ub[p] = ub[p] || want[k * n + p] != 0;
    union_sum += Iou(ua, ub, 0);
    for (size_t k = 0; k < std::max(k_ref, got.masks.size()); ++k) {
      matched_sum += k < k_ref && k < got.masks.size() ? Iou(got.masks[k], want, k * n) : 0.0;
      matched_n += 1;
    }
  }
  Json agreement = Json::object();
  agreement.set("union_miou", compared ? union_sum / compared * 100 : Json());
  agreement.set("matched_miou", matched_n ? matched_sum / matched_n * 100 : (compared ? Json(100.0) : Json()));
  agreement.set("text_match", Json());
  agreement.set("count_match", compared ? count_match / compared * 100 : Json());
  agreement.set("n", compared);
  agreement.set("against", "the bundle's golden masks (the eager model's)");

  const Manifest& m = session->manifest();
  int64_t bundle_bytes = FileSize(m.path("tokenizer.json"));
  Json placement = Json::object();
  for (const GraphSpec& g : m.graphs) {
    if (g.backend != "executorch") continue;
    for (const std::string& f : g.files) bundle_bytes += FileSize(m.path(f));
    int64_t delegated = 0, portable = 0;
    Json fallback = Json::array();
    for (const auto& method : g.placement["methods"].members()) {
      delegated += method.second["delegated_nodes"].as_int();
      portable += method.second["portable_nodes"].as_int();
      for (const auto& op : method.second["portable_ops"].members()) fallback.push(op.first);
    }
    Json p = Json::object();
    p.set("kind", "delegated_nodes");
    p.set("share", delegated + portable ? Json(static_cast<double>(delegated) / (delegated + portable)) : Json());
    p.set("fallback_ops", fallback);
    p.set("precision", g.precision);
    p.set("macs", g.macs >= 0 ? Json(g.macs) : Json());
    placement.set(g.name, p);
  }
  Json nf = Json::object();
  for (const auto& kv : nonfinite) nf.set(kv.first, kv.second);

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S+00:00", std::gmtime(&now));
  Json profile = Json::object();
  profile.set("name", args.get("profile", "native-runner"));
  profile.set("description", "the native runner (C++ core, ExecuTorch Module API, XNNPACK) on this device");
  Json golden = Json::object();
  golden.set("root", args.get("requests", m.root + "/golden"));
  golden.set("model", m.raw["source"]);
  golden.set("producer", "bundle golden vectors");
  golden.set("data", Json());
  golden.set("relation", "same");
  golden.set("samples", cases.size());
  Json size = Json::object();
  size.set("bundle_bytes", bundle_bytes);
  Json memory = Json::object();
  memory.set("peak_rss_bytes", PeakRssBytes());
  Json latency = Json::object();
  latency.set("load_s", load_s);
  latency.set("first_query", Stats(first));
  latency.set("next_query", Stats(next));
  latency.set("stages_ms_per_query", stages);
  latency.set("graphs", graphs);
  latency.set("decode_tokens_per_s", decode_s > 0 ? Json(decode_tokens / decode_s) : Json());
  latency.set("decode_tokens", decode_tokens);
  Json accuracy = Json::object();
  accuracy.set("graph_psnr", Json::object());
  accuracy.set("graph_psnr_skipped", "the native runner does not replay graph traces");
  accuracy.set("psnr_flag_db", 30.0);
  accuracy.set("flagged_graphs", Json::array());
  accuracy.set("nonfinite_outputs", nf);
  accuracy.set("tasks", Json::object());
  accuracy.set("primary", Json::object());
  accuracy.set("reference_primary", Json::object());
  accuracy.set("drop", Json::object());
  accuracy.set("mask_agreement", agreement);

  Json doc = Json::object();
  doc.set("format", "xsam_edge-bench");
  doc.set("version", 1);
  doc.set("date", date);
  doc.set("label", args.get("label", "native"));
  doc.set("bundle", m.root);
  doc.set("backend", "executorch-native");
  doc.set("profile", profile);
  doc.set("model", m.raw["source"]);
  doc.set("golden", golden);
  doc.set("machine", MachineFacts());
  doc.set("size", size);
  doc.set("memory", memory);
  doc.set("latency", latency);
  doc.set("accuracy", accuracy);
  doc.set("placement", placement);
  Json out = Json::object();
  out.set("results", Json(Json::Array{doc}));
  st = WriteFile(args.get("out"), out.dump(2) + "\n");
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 2;
  }
  std::printf("bench: %zu requests x %d, first query p50 %.2f ms, next query p50 %.2f ms, load %.3f s, peak RSS %.0f MB; "
              "wrote %s\n", cases.size(), repeats, Percentile(std::vector<double>(first), 50) * 1e3,
              Percentile(std::vector<double>(next), 50) * 1e3, load_s, PeakRssBytes() / 1e6, args.get("out").c_str());
  return 0;
}

}  // namespace xsam

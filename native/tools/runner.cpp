// xsam_runner: the native core on the command line.
//   run        one request -> overlay PNG + JSON (as `xsam-edge run` writes)
//   selfcheck  the bundle's golden vectors -> pass / fail with the worst difference
//   answer     every request of a requests.json -> results with run-length masks (parity tests)
//   bench      the harness's JSON (per-graph / per-stage p50 / p90, first vs next query, load, peak RSS)
#include <cstdio>
#include <memory>

#include "golden.hpp"
#include "runner_io.hpp"
#include "selfcheck.hpp"
#include "xsam/session.hpp"

namespace xsam {
namespace {

const char kUsage[] =
    "usage: xsam_runner COMMAND --bundle DIR [options]\n"
    "  run        --image IMG [--task T] [--text S] [--categories a,b] [--point x,y] [--box x0,y0,x1,y1]\n"
    "             [--scribble 'x,y;x,y'] [--mask PNG] --out overlay.png  (also writes overlay.json)\n"
    "  selfcheck  [--atol 1e-3] [--min-iou 0.99]\n"
    "  answer     --requests requests.json --out answers.json\n"
    "  bench      [--requests requests.json] [--repeats 1] [--warmup 1] [--label L] --out bench.json\n"
    "common: --no-verify (skip sha256), --max-new-tokens N\n";

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return 2;
}

Status OpenSession(const Args& args, std::unique_ptr<Session>* session) {
  if (!args.has("bundle")) return InvalidArgument("--bundle DIR is required");
  SessionOptions options;
  options.verify_checksums = !args.has("no-verify");
  options.max_new_tokens = std::stoi(args.get("max-new-tokens", "64"));
  return Session::Open(args.get("bundle"), options, session);
}

int Run(const Args& args) {
  std::unique_ptr<Session> session;
  Status st = OpenSession(args, &session);
  if (!st.ok()) return Fail(st);
  if (!args.has("image") || !args.has("out")) return Fail(InvalidArgument("run needs --image and --out"));
  Image image;
  Request request;
  Result result;
  if (!(st = LoadImage(args.get("image"), &image)).ok()) return Fail(st);
  if (!(st = RequestFromArgs(args, image, &request)).ok()) return Fail(st);
  if (!(st = session->Segment(request, &result)).ok()) return Fail(st);
  const std::string out = args.get("out");
  const std::string json_path = out.substr(0, out.rfind('.')) + ".json";
  if (!(st = WritePng(out, Overlay(image, result))).ok()) return Fail(st);
  Json summary = ResultSummary(result);
  Json doc = Json::object();
  doc.set("image", args.get("image"));
  doc.set("task", TaskName(request.task));
  doc.set("text", summary["text"]);
  doc.set("masks", summary["masks"]);
  if (!(st = WriteFile(json_path, doc.dump(2) + "\n")).ok()) return Fail(st);
  for (const Json& m : summary["masks"].items()) {
    std::printf("%-32s score %.3f  area %8lld px\n", m["label"].as_string().c_str(), m["score"].as_double(),
                static_cast<long long>(m["area"].as_int()));
  }
  if (result.has_text) std::printf("text: %s\n", result.text.c_str());
  std::printf("wrote %s and %s\n", out.c_str(), json_path.c_str());
  return 0;
}

int SelfCheck(const Args& args) {
  std::unique_ptr<Session> session;
  Status st = OpenSession(args, &session);
  if (!st.ok()) return Fail(st);
  const double atol = std::stod(args.get("atol", "1e-3")), min_iou = std::stod(args.get("min-iou", "0.99"));
  SelfCheckReport report;
  st = RunSelfCheck(*session, atol, min_iou, &report, [](size_t i, const SelfCheckCase& c) {
    std::printf("golden %zu %-16s class_logits max|d| %.3g  mask_logits max|d| %.3g  mask IoU min %.4f  %s\n", i,
                TaskName(c.task), c.class_logit_diff, c.mask_logit_diff, c.mask_iou, c.ok ? "ok" : "FAIL");
  });
  if (!st.ok()) return Fail(st);
  std::printf("selfcheck %s: %zu golden requests, worst logit difference %.3g (atol %.3g), worst mask IoU %.4f "
              "(min %.2f)\n", report.passed ? "PASS" : "FAIL", report.requests, report.worst_logit_diff, atol,
              report.worst_mask_iou, min_iou);
  return report.passed ? 0 : 1;
}

int Answer(const Args& args) {
  std::unique_ptr<Session> session;
  Status st = OpenSession(args, &session);
  if (!st.ok()) return Fail(st);
  if (!args.has("requests") || !args.has("out")) return Fail(InvalidArgument("answer needs --requests and --out"));
  const std::string path = args.get("requests"), root = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  std::string text;
  Json doc;
  if (!(st = ReadFile(path, &text)).ok() || !(st = Json::Parse(text, &doc)).ok()) return Fail(st);
  Json answers = Json::array();
  for (const Json& entry : doc["requests"].items()) {
    Request request;
    Result result;
    Json a = Json::object();
    st = RequestFromJson(entry, root.empty() ? "." : root, &request);
    if (st.ok()) st = session->Segment(request, &result);
    if (!st.ok()) {
      a.set("error", st.message());
      answers.push(a);
      continue;
    }
    Json summary = ResultSummary(result);
    Json rle = Json::array();
    Json scores = Json::array();
    for (size_t m = 0; m < result.masks.size(); ++m) {
      rle.push(MaskRle(result.masks[m]));
      scores.push(static_cast<double>(result.scores[m]));  // unrounded, for the 1e-3 comparison
    }
    a.set("text", summary["text"]);
    a.set("masks", summary["masks"]);
    a.set("scores", scores);
    a.set("rle", rle);
    a.set("height", result.height);
    a.set("width", result.width);
    answers.push(a);
  }
  Json out = Json::object();
  out.set("answers", answers);
  if (!(st = WriteFile(args.get("out"), out.dump(1) + "\n")).ok()) return Fail(st);
  std::printf("wrote %zu answers to %s\n", answers.size(), args.get("out").c_str());
  return 0;
}

}  // namespace
}  // namespace xsam

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(xsam::kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  xsam::Args args = xsam::ParseArgs(argc, argv, 2);
  if (command == "run") return xsam::Run(args);
  if (command == "selfcheck") return xsam::SelfCheck(args);
  if (command == "answer") return xsam::Answer(args);
  if (command == "bench") return xsam::RunBench(args);
  std::fputs(xsam::kUsage, stderr);
  return 2;
}

#include "bridge_session.hpp"

namespace xsam_apple {
namespace {

bool Check(xsam_status status, BridgeError* error) {
  if (status == XSAM_OK) return true;
  if (error) *error = {static_cast<int>(status), xsam_last_error()};
  return false;
}

struct RequestDeleter {
  void operator()(xsam_request* r) const { xsam_request_free(r); }
};
struct ResultDeleter {
  void operator()(xsam_result* r) const { xsam_result_free(r); }
};

bool Fill(const BridgeRequest& in, xsam_request* r, BridgeError* error) {
  if (in.has_text && !Check(xsam_request_set_text(r, in.text.c_str()), error)) return false;
  for (const std::string& name : in.categories) {
    if (!Check(xsam_request_add_category(r, name.c_str()), error)) return false;
  }
  for (const BridgePrompt& p : in.prompts) {
    const size_t need = p.kind == BridgePrompt::Kind::kPoint ? 2 : p.kind == BridgePrompt::Kind::kBox ? 4 : 0;
    if ((need && p.xy.size() != need) || p.xy.size() % 2 != 0) {
      if (error) *error = {XSAM_INVALID_ARGUMENT, "a prompt has the wrong number of coordinates"};
      return false;
    }
    const double* v = p.xy.data();
    xsam_status status = p.kind == BridgePrompt::Kind::kPoint ? xsam_request_add_point(r, v[0], v[1])
                         : p.kind == BridgePrompt::Kind::kBox ? xsam_request_add_box(r, v[0], v[1], v[2], v[3])
                                                              : xsam_request_add_scribble(r, v, p.xy.size() / 2);
    if (!Check(status, error)) return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<BridgeSession> BridgeSession::Open(const std::string& bundle_dir, bool verify_checksums,
                                                   BridgeError* error) {
  xsam_session* session = nullptr;
  if (!Check(xsam_open(bundle_dir.c_str(), verify_checksums ? 1 : 0, &session), error)) return nullptr;
  return std::unique_ptr<BridgeSession>(new BridgeSession(session));
}

BridgeSession::~BridgeSession() { xsam_close(session_); }

bool BridgeSession::SetImage(const uint8_t* rgb, int height, int width, BridgeError* error) {
  return Check(xsam_set_image(session_, rgb, height, width), error);
}

bool BridgeSession::Segment(const BridgeRequest& request, BridgeAnswer* answer, BridgeError* error) {
  std::unique_ptr<xsam_request, RequestDeleter> r(xsam_request_new(request.task.c_str()));
  if (!r) return Check(XSAM_INVALID_ARGUMENT, error);
  if (!Fill(request, r.get(), error)) return false;
  xsam_result* raw = nullptr;
  if (!Check(xsam_segment(session_, r.get(), &raw), error)) return false;
  std::unique_ptr<xsam_result, ResultDeleter> result(raw);
  BridgeAnswer out;
  out.height = xsam_result_height(raw);
  out.width = xsam_result_width(raw);
  size_t pixels = static_cast<size_t>(out.height) * static_cast<size_t>(out.width);
  for (size_t i = 0; i < xsam_result_count(raw); ++i) {
    BridgeSegment s;
    const uint8_t* mask = xsam_result_mask(raw, i);
    s.mask.assign(mask, mask + pixels);
    const char* label = xsam_result_label(raw, i);
    s.label = label ? label : "";
    s.label_id = xsam_result_label_id(raw, i);
    s.score = xsam_result_score(raw, i);
    out.segments.push_back(std::move(s));
  }
  const char* text = xsam_result_text(raw);
  out.has_text = text != nullptr;
  out.text = text ? text : "";
  *answer = std::move(out);
  return true;
}

bool BridgeSession::SelfCheck(double atol, double min_iou, BridgeSelfCheck* report, BridgeError* error) {
  xsam_selfcheck_report r{};
  if (!Check(xsam_selfcheck(session_, atol, min_iou, &r), error)) return false;
  *report = {r.requests, r.worst_logit_diff, r.worst_mask_iou, r.passed != 0, atol, min_iou};
  return true;
}

}  // namespace xsam_apple

// The C API over xsam::Session: handles own C++ objects; every entry point catches what C++ could throw
// (allocation failures) so nothing unwinds through a JNI or Objective-C frame.
#include "xsam/xsam.h"

#include <cmath>
#include <new>
#include <string>

#include "selfcheck.hpp"
#include "xsam/session.hpp"

struct xsam_session {
  std::unique_ptr<xsam::Session> session;
  xsam::Image image;
  bool has_image = false;
};
struct xsam_request {
  xsam::Request request;
};
struct xsam_result {
  xsam::Result result;
};

namespace {

thread_local std::string g_last_error;

xsam_status Report(const xsam::Status& s) {
  g_last_error = s.ok() ? "" : s.message();
  return static_cast<xsam_status>(s.code());
}

template <typename F>
xsam_status Guard(F&& f) {
  try {
    return Report(f());
  } catch (const std::bad_alloc&) {
    return Report(xsam::RuntimeError("out of memory"));
  } catch (...) {
    return Report(xsam::RuntimeError("unexpected C++ exception in the native runtime"));
  }
}

}  // namespace

extern "C" {

const char* xsam_last_error(void) { return g_last_error.c_str(); }

xsam_status xsam_open(const char* bundle_dir, int verify_checksums, xsam_session** out) {
  return Guard([&] {
    if (!bundle_dir || !out) return xsam::InvalidArgument("xsam_open needs a bundle folder and an output handle");
    xsam::SessionOptions options;
    options.verify_checksums = verify_checksums != 0;
    auto handle = std::make_unique<xsam_session>();
    XSAM_RETURN_IF_ERROR(xsam::Session::Open(bundle_dir, options, &handle->session));
    *out = handle.release();
    return xsam::Status::Ok();
  });
}

void xsam_close(xsam_session* session) { delete session; }

xsam_status xsam_set_image(xsam_session* s, const uint8_t* rgb, int height, int width) {
  return Guard([&] {
    if (!s || !rgb || height < 2 || width < 2) return xsam::InvalidArgument("xsam_set_image needs an RGB image of at least 2x2");
    s->image.height = height;
    s->image.width = width;
    s->image.channels = 3;
    s->image.data.assign(rgb, rgb + static_cast<size_t>(height) * width * 3);
    s->has_image = true;
    return s->session->SetImage(s->image);
  });
}

xsam_request* xsam_request_new(const char* task) {
  xsam::Task t;
  xsam::Status st = xsam::ParseTask(task ? task : "", &t);
  Report(st);
  if (!st.ok()) return nullptr;
  auto* r = new (std::nothrow) xsam_request();
  if (r) r->request.task = t;
  return r;
}

void xsam_request_free(xsam_request* request) { delete request; }

xsam_status xsam_request_set_text(xsam_request* r, const char* text) {
  return Guard([&] {
    if (!r || !text) return xsam::InvalidArgument("xsam_request_set_text needs a request and a text");
    r->request.has_text = true;
    r->request.text = text;
    return xsam::Status::Ok();
  });
}

xsam_status xsam_request_add_category(xsam_request* r, const char* name) {
  return Guard([&] {
    if (!r || !name) return xsam::InvalidArgument("xsam_request_add_category needs a request and a name");
    r->request.categories.emplace_back(name);
    return xsam::Status::Ok();
  });
}

xsam_status xsam_request_add_point(xsam_request* r, double x, double y) {
  return Guard([&] {
    if (!r) return xsam::InvalidArgument("null request");
    r->request.prompts.push_back(xsam::Prompt::Point(x, y));
    return xsam::Status::Ok();
  });
}

xsam_status xsam_request_add_box(xsam_request* r, double x0, double y0, double x1, double y1) {
  return Guard([&] {
    if (!r) return xsam::InvalidArgument("null request");
    r->request.prompts.push_back(xsam::Prompt::Box(x0, y0, x1, y1));
    return xsam::Status::Ok();
  });
}

xsam_status xsam_request_add_scribble(xsam_request* r, const double* xy, size_t n) {
  return Guard([&] {
    if (!r || !xy || n == 0) return xsam::InvalidArgument("a scribble needs at least one point");
    xsam::Prompt p;
    p.kind = xsam::Prompt::Kind::kScribble;
    for (size_t i = 0; i < n; ++i) p.points.push_back({xy[2 * i], xy[2 * i + 1]});
    r->request.prompts.push_back(std::move(p));
    return xsam::Status::Ok();
  });
}

xsam_status xsam_request_add_mask(xsam_request* r, const uint8_t* mask, int height, int width) {
  return Guard([&] {
    if (!r || !mask || height < 1 || width < 1) return xsam::InvalidArgument("a mask prompt needs its pixels");
    xsam::Prompt p;
    p.kind = xsam::Prompt::Kind::kMask;
    p.mask_height = height;
    p.mask_width = width;
    p.mask.resize(static_cast<size_t>(height) * width);
    for (size_t i = 0; i < p.mask.size(); ++i) p.mask[i] = mask[i] != 0;
    r->request.prompts.push_back(std::move(p));
    return xsam::Status::Ok();
  });
}

xsam_status xsam_segment(xsam_session* s, const xsam_request* r, xsam_result** out) {
  return Guard([&] {
    if (!s || !r || !out) return xsam::InvalidArgument("xsam_segment needs a session, a request and an output");
    if (!s->has_image) return xsam::Status(xsam::Code::kOrder, "call xsam_set_image before xsam_segment");
    xsam::Request request = r->request;
    request.image = s->image;
    auto result = std::make_unique<xsam_result>();
    XSAM_RETURN_IF_ERROR(s->session->Segment(request, &result->result));
    *out = result.release();
    return xsam::Status::Ok();
  });
}

xsam_status xsam_selfcheck(xsam_session* s, double atol, double min_iou, xsam_selfcheck_report* out) {
  return Guard([&] {
    if (!s || !out) return xsam::InvalidArgument("xsam_selfcheck needs a session and a report");
    if (!(atol >= 0) || std::isnan(min_iou)) {
      return xsam::InvalidArgument("xsam_selfcheck needs atol >= 0 and a min_iou that is a number");
    }
    xsam::SelfCheckReport report;
    XSAM_RETURN_IF_ERROR(xsam::RunSelfCheck(*s->session, atol, min_iou, &report));
    out->requests = report.requests;
    out->worst_logit_diff = report.worst_logit_diff;
    out->worst_mask_iou = report.worst_mask_iou;
    out->passed = report.passed ? 1 : 0;
    return xsam::Status::Ok();
  });
}

void xsam_result_free(xsam_result* result) { delete result; }
size_t xsam_result_count(const xsam_result* r) { return r ? r->result.masks.size() : 0; }
int xsam_result_height(const xsam_result* r) { return r ? r->result.height : 0; }
int xsam_result_width(const xsam_result* r) { return r ? r->result.width : 0; }

const uint8_t* xsam_result_mask(const xsam_result* r, size_t i) {
  return r && i < r->result.masks.size() ? r->result.masks[i].data() : nullptr;
}
const char* xsam_result_label(const xsam_result* r, size_t i) {
  return r && i < r->result.labels.size() ? r->result.labels[i].c_str() : nullptr;
}
float xsam_result_score(const xsam_result* r, size_t i) {
  return r && i < r->result.scores.size() ? r->result.scores[i] : 0.0f;
}
int64_t xsam_result_label_id(const xsam_result* r, size_t i) {
  return r && i < r->result.label_ids.size() ? r->result.label_ids[i] : -1;
}
const char* xsam_result_text(const xsam_result* r) {
  return r && r->result.has_text ? r->result.text.c_str() : nullptr;
}

}  // extern "C"

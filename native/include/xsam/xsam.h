/* The native core's C API, for JNI (Android) and Objective-C++ (iOS) wrappers: opaque handles, status codes,
 * and a message per handle for the last error. Nothing here aborts on bad input.
 *
 *   xsam_session* s; xsam_open("bundle", 1, &s);
 *   xsam_set_image(s, rgb, h, w);
 *   xsam_request* r = xsam_request_new("referring"); xsam_request_set_text(r, "the red circle");
 *   xsam_result* out; xsam_segment(s, r, &out);  ... xsam_result_mask(out, 0) ...
 *   xsam_result_free(out); xsam_request_free(r); xsam_close(s);
 */
#ifndef XSAM_XSAM_H_
#define XSAM_XSAM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  XSAM_OK = 0,
  XSAM_INVALID_ARGUMENT = 1,
  XSAM_BUNDLE_ERROR = 2,
  XSAM_RUNTIME_ERROR = 3,
  XSAM_ORDER_ERROR = 4,
  XSAM_UNSUPPORTED = 5,
  XSAM_IO_ERROR = 6,
} xsam_status;

typedef struct xsam_session xsam_session;
typedef struct xsam_request xsam_request;
typedef struct xsam_result xsam_result;

/* The message of the last failed call on this thread ("" after a success). */
const char* xsam_last_error(void);

xsam_status xsam_open(const char* bundle_dir, int verify_checksums, xsam_session** out);
void xsam_close(xsam_session* session);
/* (h, w, 3) RGB bytes, row-major; copied. */
xsam_status xsam_set_image(xsam_session* session, const uint8_t* rgb, int height, int width);

/* task: "referring", "reasoning", "panoptic", "instance", "semantic", "open_vocabulary", "interactive",
 * "visual_grounded", "gcg" or "chat". NULL for an unknown task (see xsam_last_error). */
xsam_request* xsam_request_new(const char* task);
void xsam_request_free(xsam_request* request);
xsam_status xsam_request_set_text(xsam_request* request, const char* text);
xsam_status xsam_request_add_category(xsam_request* request, const char* name);
xsam_status xsam_request_add_point(xsam_request* request, double x, double y);
xsam_status xsam_request_add_box(xsam_request* request, double x0, double y0, double x1, double y1);
/* A scribble: n points as x0, y0, x1, y1, ... */
xsam_status xsam_request_add_scribble(xsam_request* request, const double* xy, size_t n);
/* A mask prompt at the image size: h·w bytes, nonzero inside. */
xsam_status xsam_request_add_mask(xsam_request* request, const uint8_t* mask, int height, int width);

/* Answer the request on the image set last (xsam_set_image first). */
xsam_status xsam_segment(xsam_session* session, const xsam_request* request, xsam_result** out);
void xsam_result_free(xsam_result* result);
size_t xsam_result_count(const xsam_result* result);
int xsam_result_height(const xsam_result* result);
int xsam_result_width(const xsam_result* result);
/* Mask i: height·width bytes, 1 inside; valid until xsam_result_free. */
const uint8_t* xsam_result_mask(const xsam_result* result, size_t i);
const char* xsam_result_label(const xsam_result* result, size_t i);
float xsam_result_score(const xsam_result* result, size_t i);
int64_t xsam_result_label_id(const xsam_result* result, size_t i);
/* The answer's text (GCG, chat), or NULL. */
const char* xsam_result_text(const xsam_result* result);

/* The bundle's golden vectors (golden/requests.json + outputs.npz) run on this device and compared with the
 * stored outputs: a request passes when its class and mask logits are within atol (max |d|) and every mask's
 * IoU with the stored one is at least min_iou (the runner's `selfcheck` uses 1e-3 and 0.99). */
typedef struct {
  size_t requests;          /* golden requests run */
  double worst_logit_diff;  /* largest max |d| over class and mask logits */
  double worst_mask_iou;    /* smallest mask IoU (0 where the mask count differed) */
  int passed;               /* 1 when every request passed and there was at least one */
} xsam_selfcheck_report;

/* XSAM_OK with *out filled, whether the check passed or not (see out->passed). XSAM_UNSUPPORTED when the
 * bundle has no golden vectors; XSAM_INVALID_ARGUMENT for atol < 0 or a NaN tolerance; other codes when the
 * vectors are unreadable or a request fails. Needs no image; the golden images replace the session's encoded
 * one, so the next xsam_segment encodes the image of xsam_set_image again. */
xsam_status xsam_selfcheck(xsam_session* session, double atol, double min_iou, xsam_selfcheck_report* out);

#ifdef __cplusplus
}
#endif

#endif /* XSAM_XSAM_H_ */

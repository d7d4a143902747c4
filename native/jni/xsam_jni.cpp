// JNI over the C API (include/xsam/xsam.h), one native method per C function, for org.xsam.edge.XSamNative.
// Strings cross as UTF-8 byte arrays (JNI's own "modified UTF-8" mangles NUL and characters outside the BMP);
// statuses come back as ints and Kotlin reads xsam_last_error() on the same thread to build its exception.
// Array lengths that do not match the sizes passed are a caller bug: they throw IllegalArgumentException
// instead of reading past the array.
#include <jni.h>

#include <cstdint>
#include <string>
#include <vector>

#include "xsam/xsam.h"

namespace {

template <typename T>
T* Handle(jlong h) {
  return reinterpret_cast<T*>(static_cast<intptr_t>(h));
}

jlong ToJlong(const void* p) { return static_cast<jlong>(reinterpret_cast<intptr_t>(p)); }

void ThrowIllegalArgument(JNIEnv* env, const char* message) {
  jclass cls = env->FindClass("java/lang/IllegalArgumentException");
  if (cls) env->ThrowNew(cls, message);
}

// A Java byte[] as a NUL-terminated std::string (UTF-8 by the Kotlin side's contract).
std::string Utf8(JNIEnv* env, jbyteArray bytes) {
  std::string out;
  if (!bytes) return out;
  jsize n = env->GetArrayLength(bytes);
  out.resize(static_cast<size_t>(n));
  if (n > 0) env->GetByteArrayRegion(bytes, 0, n, reinterpret_cast<jbyte*>(&out[0]));
  return out;
}

jbyteArray Bytes(JNIEnv* env, const void* data, size_t n) {
  jbyteArray out = env->NewByteArray(static_cast<jsize>(n));
  if (out && n > 0) env->SetByteArrayRegion(out, 0, static_cast<jsize>(n), static_cast<const jbyte*>(data));
  return out;
}

jbyteArray CString(JNIEnv* env, const char* s) { return s ? Bytes(env, s, std::char_traits<char>::length(s)) : nullptr; }

bool StoreHandle(JNIEnv* env, jlongArray out, const void* handle) {
  if (!out || env->GetArrayLength(out) < 1) {
    ThrowIllegalArgument(env, "the output handle array must hold one element");
    return false;
  }
  jlong value = ToJlong(handle);
  env->SetLongArrayRegion(out, 0, 1, &value);
  return true;
}

}  // namespace

#define XSAM_JNI(ret, name) extern "C" JNIEXPORT ret JNICALL Java_org_xsam_edge_XSamNative_##name

XSAM_JNI(jbyteArray, lastError)(JNIEnv* env, jclass) { return CString(env, xsam_last_error()); }

XSAM_JNI(jint, open)(JNIEnv* env, jclass, jbyteArray dir, jboolean verify, jlongArray out) {
  std::string path = Utf8(env, dir);
  xsam_session* session = nullptr;
  xsam_status status = xsam_open(path.c_str(), verify ? 1 : 0, &session);
  if (!StoreHandle(env, out, session)) {
    xsam_close(session);
    return XSAM_INVALID_ARGUMENT;
  }
  return status;
}

XSAM_JNI(void, close)(JNIEnv*, jclass, jlong session) { xsam_close(Handle<xsam_session>(session)); }

XSAM_JNI(jint, setImage)(JNIEnv* env, jclass, jlong session, jbyteArray rgb, jint height, jint width) {
  if (!rgb || height < 0 || width < 0 || env->GetArrayLength(rgb) != static_cast<jlong>(height) * width * 3) {
    ThrowIllegalArgument(env, "setImage: the RGB array must hold height * width * 3 bytes");
    return XSAM_INVALID_ARGUMENT;
  }
  std::vector<uint8_t> pixels(static_cast<size_t>(env->GetArrayLength(rgb)));
  env->GetByteArrayRegion(rgb, 0, static_cast<jsize>(pixels.size()), reinterpret_cast<jbyte*>(pixels.data()));
  return xsam_set_image(Handle<xsam_session>(session), pixels.data(), height, width);
}

XSAM_JNI(jlong, requestNew)(JNIEnv* env, jclass, jbyteArray task) {
  return ToJlong(xsam_request_new(Utf8(env, task).c_str()));
}

XSAM_JNI(void, requestFree)(JNIEnv*, jclass, jlong request) { xsam_request_free(Handle<xsam_request>(request)); }

XSAM_JNI(jint, requestSetText)(JNIEnv* env, jclass, jlong request, jbyteArray text) {
  return xsam_request_set_text(Handle<xsam_request>(request), Utf8(env, text).c_str());
}

XSAM_JNI(jint, requestAddCategory)(JNIEnv* env, jclass, jlong request, jbyteArray name) {
  return xsam_request_add_category(Handle<xsam_request>(request), Utf8(env, name).c_str());
}

XSAM_JNI(jint, requestAddPoint)(JNIEnv*, jclass, jlong request, jdouble x, jdouble y) {
  return xsam_request_add_point(Handle<xsam_request>(request), x, y);
}

XSAM_JNI(jint, requestAddBox)(JNIEnv*, jclass, jlong request, jdouble x0, jdouble y0, jdouble x1, jdouble y1) {
  return xsam_request_add_box(Handle<xsam_request>(request), x0, y0, x1, y1);
}

XSAM_JNI(jint, requestAddScribble)(JNIEnv* env, jclass, jlong request, jdoubleArray xy) {
  jsize n = xy ? env->GetArrayLength(xy) : 0;
  if (n % 2 != 0) {
    ThrowIllegalArgument(env, "requestAddScribble: x, y pairs expected");
    return XSAM_INVALID_ARGUMENT;
  }
  std::vector<double> coords(static_cast<size_t>(n));
  if (n > 0) env->GetDoubleArrayRegion(xy, 0, n, coords.data());
  return xsam_request_add_scribble(Handle<xsam_request>(request), n > 0 ? coords.data() : nullptr, coords.size() / 2);
}

XSAM_JNI(jint, requestAddMask)(JNIEnv* env, jclass, jlong request, jbyteArray mask, jint height, jint width) {
  if (!mask || height < 0 || width < 0 || env->GetArrayLength(mask) != static_cast<jlong>(height) * width) {
    ThrowIllegalArgument(env, "requestAddMask: the mask array must hold height * width bytes");
    return XSAM_INVALID_ARGUMENT;
  }
  std::vector<uint8_t> pixels(static_cast<size_t>(env->GetArrayLength(mask)));
  env->GetByteArrayRegion(mask, 0, static_cast<jsize>(pixels.size()), reinterpret_cast<jbyte*>(pixels.data()));
  return xsam_request_add_mask(Handle<xsam_request>(request), pixels.data(), height, width);
}

XSAM_JNI(jint, segment)(JNIEnv* env, jclass, jlong session, jlong request, jlongArray out) {
  xsam_result* result = nullptr;
  xsam_status status = xsam_segment(Handle<xsam_session>(session), Handle<xsam_request>(request), &result);
  if (!StoreHandle(env, out, result)) {
    xsam_result_free(result);
    return XSAM_INVALID_ARGUMENT;
  }
  return status;
}

XSAM_JNI(void, resultFree)(JNIEnv*, jclass, jlong result) { xsam_result_free(Handle<xsam_result>(result)); }

XSAM_JNI(jint, resultCount)(JNIEnv*, jclass, jlong result) {
  return static_cast<jint>(xsam_result_count(Handle<xsam_result>(result)));
}

XSAM_JNI(jint, resultHeight)(JNIEnv*, jclass, jlong result) { return xsam_result_height(Handle<xsam_result>(result)); }

XSAM_JNI(jint, resultWidth)(JNIEnv*, jclass, jlong result) { return xsam_result_width(Handle<xsam_result>(result)); }

XSAM_JNI(jbyteArray, resultMask)(JNIEnv* env, jclass, jlong result, jint i) {
  const xsam_result* r = Handle<xsam_result>(result);
  const uint8_t* mask = i < 0 ? nullptr : xsam_result_mask(r, static_cast<size_t>(i));
  if (!mask) return nullptr;
  return Bytes(env, mask, static_cast<size_t>(xsam_result_height(r)) * xsam_result_width(r));
}

XSAM_JNI(jbyteArray, resultLabel)(JNIEnv* env, jclass, jlong result, jint i) {
  return i < 0 ? nullptr : CString(env, xsam_result_label(Handle<xsam_result>(result), static_cast<size_t>(i)));
}

XSAM_JNI(jfloat, resultScore)(JNIEnv*, jclass, jlong result, jint i) {
  return i < 0 ? 0.0f : xsam_result_score(Handle<xsam_result>(result), static_cast<size_t>(i));
}

XSAM_JNI(jlong, resultLabelId)(JNIEnv*, jclass, jlong result, jint i) {
  return i < 0 ? -1 : xsam_result_label_id(Handle<xsam_result>(result), static_cast<size_t>(i));
}

XSAM_JNI(jbyteArray, resultText)(JNIEnv* env, jclass, jlong result) {
  return CString(env, xsam_result_text(Handle<xsam_result>(result)));
}

// out: {requests, worst logit difference, worst mask IoU, passed (1 or 0)}
XSAM_JNI(jint, selfcheck)(JNIEnv* env, jclass, jlong session, jdouble atol, jdouble min_iou, jdoubleArray out) {
  if (!out || env->GetArrayLength(out) < 4) {
    ThrowIllegalArgument(env, "selfcheck: the output array must hold four elements");
    return XSAM_INVALID_ARGUMENT;
  }
  xsam_selfcheck_report report{};
  xsam_status status = xsam_selfcheck(Handle<xsam_session>(session), atol, min_iou, &report);
  if (status == XSAM_OK) {
    const jdouble values[4] = {static_cast<jdouble>(report.requests), report.worst_logit_diff, report.worst_mask_iou,
                               report.passed ? 1.0 : 0.0};
    env->SetDoubleArrayRegion(out, 0, 4, values);
  }
  return status;
}

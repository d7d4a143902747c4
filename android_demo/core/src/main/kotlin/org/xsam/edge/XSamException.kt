package org.xsam.edge

/** A failed call into the native core: the `xsam_status` code and the core's message (`xsam_last_error`). */
class XSamException(val status: Status, message: String) : Exception("${status.name.toLowerCase()}: $message") {

    /** `xsam_status` of native/include/xsam/xsam.h, same order. */
    enum class Status { OK, INVALID_ARGUMENT, BUNDLE_ERROR, RUNTIME_ERROR, ORDER_ERROR, UNSUPPORTED, IO_ERROR, UNKNOWN }

    companion object {
        internal fun statusOf(code: Int): Status = Status.values().getOrElse(code) { Status.UNKNOWN }

        /** Throws for a non-zero status, with the message the core left on this thread. */
        internal fun check(code: Int) {
            if (code != 0) throw XSamException(statusOf(code), lastErrorMessage())
        }

        internal fun lastErrorMessage(): String = XSamNative.lastError()?.toString(Charsets.UTF_8) ?: ""
    }
}

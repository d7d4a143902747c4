package org.xsam.edge

/**
 * The JNI surface (native/jni/xsam_jni.cpp): one method per function of native/include/xsam/xsam.h.
 *
 * Strings cross as UTF-8 byte arrays and statuses as ints; [XSamSession] turns them into Kotlin types and
 * exceptions. Nothing else should call these directly.
 */
internal object XSamNative {
    init {
        System.loadLibrary("xsam_jni")
    }

    @JvmStatic external fun lastError(): ByteArray?
    @JvmStatic external fun open(dir: ByteArray, verify: Boolean, out: LongArray): Int
    @JvmStatic external fun close(session: Long)
    @JvmStatic external fun setImage(session: Long, rgb: ByteArray, height: Int, width: Int): Int

    @JvmStatic external fun requestNew(task: ByteArray): Long
    @JvmStatic external fun requestFree(request: Long)
    @JvmStatic external fun requestSetText(request: Long, text: ByteArray): Int
    @JvmStatic external fun requestAddCategory(request: Long, name: ByteArray): Int
    @JvmStatic external fun requestAddPoint(request: Long, x: Double, y: Double): Int
    @JvmStatic external fun requestAddBox(request: Long, x0: Double, y0: Double, x1: Double, y1: Double): Int
    @JvmStatic external fun requestAddScribble(request: Long, xy: DoubleArray): Int
    @JvmStatic external fun requestAddMask(request: Long, mask: ByteArray, height: Int, width: Int): Int

    @JvmStatic external fun segment(session: Long, request: Long, out: LongArray): Int
    @JvmStatic external fun resultFree(result: Long)
    @JvmStatic external fun resultCount(result: Long): Int
    @JvmStatic external fun resultHeight(result: Long): Int
    @JvmStatic external fun resultWidth(result: Long): Int
    @JvmStatic external fun resultMask(result: Long, i: Int): ByteArray?
    @JvmStatic external fun resultLabel(result: Long, i: Int): ByteArray?
    @JvmStatic external fun resultScore(result: Long, i: Int): Float
    @JvmStatic external fun resultLabelId(result: Long, i: Int): Long
    @JvmStatic external fun resultText(result: Long): ByteArray?

    /** out: requests, worst logit difference, worst mask IoU, passed (1 or 0). */
    @JvmStatic external fun selfcheck(session: Long, atol: Double, minIou: Double, out: DoubleArray): Int
}

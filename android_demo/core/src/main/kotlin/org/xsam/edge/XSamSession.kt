package org.xsam.edge

import java.io.Closeable
import java.io.File

/**
 * An opened bundle (xsam_open): set an image, then answer requests on it. Not thread-safe: use one thread
 * per session (the core keeps one image's state, and its last error is per thread).
 */
class XSamSession private constructor(private var handle: Long) : Closeable {

    companion object {
        /** Opens and verifies [bundleDir] (sizes and sha256 of every listed file unless [verifyChecksums] is off). */
        @JvmStatic
        fun open(bundleDir: File, verifyChecksums: Boolean = true): XSamSession {
            val out = LongArray(1)
            XSamException.check(XSamNative.open(bundleDir.path.toByteArray(Charsets.UTF_8), verifyChecksums, out))
            return XSamSession(out[0])
        }
    }

    /** (height, width, 3) RGB bytes, row-major; the core copies them and encodes the image once. */
    fun setImage(rgb: ByteArray, height: Int, width: Int) {
        require(rgb.size == height * width * 3) { "RGB array holds ${rgb.size} bytes, not $height x $width x 3" }
        XSamException.check(XSamNative.setImage(live(), rgb, height, width))
    }

    fun segment(request: SegmentRequest): SegmentResult {
        val session = live()
        val native = XSamNative.requestNew(utf8(request.task.wireName))
        if (native == 0L) throw XSamException(XSamException.Status.INVALID_ARGUMENT, XSamException.lastErrorMessage())
        try {
            fill(native, request)
            val out = LongArray(1)
            XSamException.check(XSamNative.segment(session, native, out))
            try {
                return read(out[0])
            } finally {
                XSamNative.resultFree(out[0])
            }
        } finally {
            XSamNative.requestFree(native)
        }
    }

    /**
     * Runs the bundle's golden vectors and compares them with the stored outputs (xsam_selfcheck). A failed
     * comparison is a report with passed = false; a bundle without golden vectors is an UNSUPPORTED
     * [XSamException]. The golden images replace the encoded one: the next [segment] encodes the image again.
     */
    fun selfcheck(atol: Double = 1e-3, minIou: Double = 0.99): SelfCheckReport {
        val out = DoubleArray(4)
        XSamException.check(XSamNative.selfcheck(live(), atol, minIou, out))
        return SelfCheckReport(out[0].toInt(), out[1], out[2], out[3] != 0.0, atol, minIou)
    }

    override fun close() {
        if (handle != 0L) XSamNative.close(handle)
        handle = 0L
    }

    private fun live(): Long {
        check(handle != 0L) { "the session is closed" }
        return handle
    }

    private fun fill(native: Long, request: SegmentRequest) {
        request.text?.let { XSamException.check(XSamNative.requestSetText(native, utf8(it))) }
        for (name in request.categories) XSamException.check(XSamNative.requestAddCategory(native, utf8(name)))
        for (prompt in request.prompts) {
            val status = when (prompt) {
                is Prompt.Point -> XSamNative.requestAddPoint(native, prompt.x, prompt.y)
                is Prompt.Box -> XSamNative.requestAddBox(native, prompt.x0, prompt.y0, prompt.x1, prompt.y1)
                is Prompt.Scribble -> XSamNative.requestAddScribble(native, flatten(prompt.points))
                is Prompt.Mask -> XSamNative.requestAddMask(native, prompt.mask, prompt.height, prompt.width)
            }
            XSamException.check(status)
        }
    }

    private fun read(result: Long): SegmentResult {
        val segments = (0 until XSamNative.resultCount(result)).map { i ->
            Segment(
                mask = XSamNative.resultMask(result, i) ?: ByteArray(0),
                label = XSamNative.resultLabel(result, i)?.toString(Charsets.UTF_8) ?: "",
                labelId = XSamNative.resultLabelId(result, i),
                score = XSamNative.resultScore(result, i)
            )
        }
        val text = XSamNative.resultText(result)?.toString(Charsets.UTF_8)
        return SegmentResult(XSamNative.resultHeight(result), XSamNative.resultWidth(result), segments, text)
    }

    private fun utf8(s: String): ByteArray = s.toByteArray(Charsets.UTF_8)

    private fun flatten(points: List<Prompt.Point>): DoubleArray {
        val xy = DoubleArray(points.size * 2)
        points.forEachIndexed { i, p ->
            xy[2 * i] = p.x
            xy[2 * i + 1] = p.y
        }
        return xy
    }
}

package org.xsam.edge

/** What a gesture or the text box means on the demo's one screen. */
enum class InputMode { TEXT, POINT, BOX, SCRIBBLE }

/** The demo screen's inputs turned into requests and prompts, kept out of the Activity so the JVM tests cover them. */
object DemoInput {
    /** Largest image side handed to the core: masks come back at the image size, and a 12 MP photo's are 12 MB each. */
    const val MAX_SIDE = 1024

    /** A referring request for the typed text, or an interactive one for the drawn prompts; null when empty. */
    fun request(mode: InputMode, text: String, prompts: List<Prompt>): SegmentRequest? = when (mode) {
        InputMode.TEXT -> text.trim().takeIf { it.isNotEmpty() }?.let { SegmentRequest(Task.REFERRING, text = it) }
        else -> if (prompts.isEmpty()) null else SegmentRequest(Task.INTERACTIVE, prompts = prompts.toList())
    }

    /** The prompt a finished gesture (touch-down to touch-up, view coordinates) draws in [mode], if any. */
    fun prompt(mode: InputMode, gestures: PromptGestures, path: List<ViewPoint>): Prompt? {
        if (path.isEmpty()) return null
        return when (mode) {
            InputMode.TEXT -> null
            InputMode.POINT -> gestures.tap(path.last())
            InputMode.BOX -> gestures.box(path.first(), path.last())
            InputMode.SCRIBBLE -> gestures.scribble(path)
        }
    }

    /** [width] x [height] scaled so the longer side is at most [maxSide], aspect kept (never upscaled). */
    fun scaledSize(width: Int, height: Int, maxSide: Int = MAX_SIDE): IntArray {
        val longer = maxOf(width, height)
        if (longer <= maxSide) return intArrayOf(width, height)
        val s = maxSide.toDouble() / longer
        return intArrayOf(maxOf(1, Math.round(width * s).toInt()), maxOf(1, Math.round(height * s).toInt()))
    }

    /** (width * height) ARGB pixels, as Android's Bitmap.getPixels gives them, to the core's RGB bytes. */
    fun argbToRgb(argb: IntArray): ByteArray {
        val rgb = ByteArray(argb.size * 3)
        for (i in argb.indices) {
            rgb[3 * i] = (argb[i] shr 16).toByte()
            rgb[3 * i + 1] = (argb[i] shr 8).toByte()
            rgb[3 * i + 2] = argb[i].toByte()
        }
        return rgb
    }
}

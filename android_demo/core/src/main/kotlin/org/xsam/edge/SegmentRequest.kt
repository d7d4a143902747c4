package org.xsam.edge

/** The tasks of `xsam_request_new`, with the names the core (and spec/types.py) uses. */
enum class Task(val wireName: String) {
    REFERRING("referring"),
    REASONING("reasoning"),
    PANOPTIC("panoptic"),
    INSTANCE("instance"),
    SEMANTIC("semantic"),
    OPEN_VOCABULARY("open_vocabulary"),
    INTERACTIVE("interactive"),
    VISUAL_GROUNDED("visual_grounded"),
    GCG("gcg"),
    CHAT("chat");

    companion object {
        fun fromWireName(name: String): Task =
            values().firstOrNull { it.wireName == name } ?: throw IllegalArgumentException("unknown task '$name'")
    }
}

/** A visual prompt in image pixels (x right, y down), as spec/types.py defines them. */
sealed class Prompt {
    data class Point(val x: Double, val y: Double) : Prompt()
    data class Box(val x0: Double, val y0: Double, val x1: Double, val y1: Double) : Prompt()
    /** Points in drawing order. */
    data class Scribble(val points: List<Point>) : Prompt()
    /** height * width bytes, nonzero inside; the image's size. */
    class Mask(val mask: ByteArray, val height: Int, val width: Int) : Prompt() {
        init {
            require(mask.size == height * width) { "mask holds ${mask.size} bytes, not $height x $width" }
        }
    }
}

/** What to ask about the image set last: a task, its text or categories, its visual prompts. */
data class SegmentRequest(
    val task: Task,
    val text: String? = null,
    val categories: List<String> = emptyList(),
    val prompts: List<Prompt> = emptyList()
)

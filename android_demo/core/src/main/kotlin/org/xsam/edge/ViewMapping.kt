package org.xsam.edge

/** A point in view coordinates (pixels of the on-screen view, x right, y down). */
data class ViewPoint(val x: Float, val y: Float)

/**
 * Where an image lands in a view when scaled to fit and centred (Android's ImageView FIT_CENTER, SwiftUI's
 * scaledToFit), and the maps between the two: touches go view → image for prompts, masks and labels go
 * image → view for drawing. Image coordinates are continuous pixels: pixel (i, j) spans [i, i + 1).
 */
class FitTransform(val imageWidth: Int, val imageHeight: Int, val viewWidth: Float, val viewHeight: Float) {
    init {
        require(imageWidth > 0 && imageHeight > 0 && viewWidth > 0 && viewHeight > 0) { "empty image or view" }
    }

    /** View pixels per image pixel. */
    val scale: Float = minOf(viewWidth / imageWidth, viewHeight / imageHeight)
    val offsetX: Float = (viewWidth - imageWidth * scale) / 2
    val offsetY: Float = (viewHeight - imageHeight * scale) / 2

    /** The image point under a view point, or null when the touch is on the letterbox bars. */
    fun toImage(p: ViewPoint): Prompt.Point? {
        val x = (p.x - offsetX) / scale
        val y = (p.y - offsetY) / scale
        return if (x < 0 || y < 0 || x > imageWidth || y > imageHeight) null else Prompt.Point(x.toDouble(), y.toDouble())
    }

    /** Like [toImage], but a point off the image is moved to its nearest edge (drags may leave the image). */
    fun toImageClamped(p: ViewPoint): Prompt.Point = Prompt.Point(
        ((p.x - offsetX) / scale).coerceIn(0f, imageWidth.toFloat()).toDouble(),
        ((p.y - offsetY) / scale).coerceIn(0f, imageHeight.toFloat()).toDouble()
    )

    fun toView(x: Double, y: Double): ViewPoint =
        ViewPoint((x * scale + offsetX).toFloat(), (y * scale + offsetY).toFloat())
}

/** Turns gestures on the image view into prompts in image pixels for [SegmentRequest.prompts]. */
class PromptGestures(private val fit: FitTransform) {

    /** A tap: a point prompt, or null off the image. */
    fun tap(at: ViewPoint): Prompt.Point? = fit.toImage(at)

    /** A drag from [start] to [end]: the box they span (either drag direction), clamped to the image. */
    fun box(start: ViewPoint, end: ViewPoint): Prompt.Box? {
        val a = fit.toImageClamped(start)
        val b = fit.toImageClamped(end)
        val box = Prompt.Box(minOf(a.x, b.x), minOf(a.y, b.y), maxOf(a.x, b.x), maxOf(a.y, b.y))
        return if (box.x1 - box.x0 < 1 || box.y1 - box.y0 < 1) null else box  // a slip of the finger, not a box
    }

    /**
     * A finger path: a scribble of its image points, clamped to the image, dropping points closer than
     * [minSpacing] image pixels to the last kept one (touch events come far denser than the prompt raster).
     */
    fun scribble(path: List<ViewPoint>, minSpacing: Double = 1.0): Prompt.Scribble? {
        val kept = ArrayList<Prompt.Point>()
        for (p in path) {
            val q = fit.toImageClamped(p)
            val last = kept.lastOrNull()
            if (last == null || Math.hypot(q.x - last.x, q.y - last.y) >= minSpacing) kept.add(q)
        }
        return if (kept.isEmpty()) null else Prompt.Scribble(kept)
    }
}

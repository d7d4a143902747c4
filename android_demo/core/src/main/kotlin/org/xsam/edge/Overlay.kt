package org.xsam.edge

import java.util.Locale

/**
 * Drawing maths for a [SegmentResult], the same as xsam_edge/spec/image_io.py (palette, overlay, annotate) so
 * the app shows what `xsam-edge run` writes. Pure arithmetic on arrays; the Android view only blits them.
 */
object Overlay {
    /** Default colour weight inside a mask (spec's `overlay(alpha=0.5)`). */
    const val ALPHA = 0.5f

    /** Colour [i] of spec's `palette(n)` as 0xRRGGBB: golden-ratio hue steps, value alternating 1 / 0.75. */
    fun paletteRgb(i: Int): Int {
        val hue = (i * 0.618033988749895) % 1.0
        val value = if (i % 2 == 0) 1.0 else 0.75
        var rgb = 0
        for (offset in doubleArrayOf(5.0, 3.0, 1.0)) {
            val k = (hue * 6 + offset) % 6
            val v = value * (1 - minOf(k, 4 - k).coerceIn(0.0, 1.0))
            rgb = (rgb shl 8) or Math.rint(v * 255).toInt()
        }
        return rgb
    }

    /**
     * A height * width ARGB layer to draw over the image: each mask's palette colour at [alpha], transparent
     * elsewhere, later masks on top (as spec's overlay blends them in order).
     */
    fun maskLayer(result: SegmentResult, alpha: Float = ALPHA): IntArray {
        val layer = IntArray(result.height * result.width)
        val a = Math.round(alpha * 255).coerceIn(0, 255) shl 24
        result.segments.forEachIndexed { m, segment ->
            val argb = a or paletteRgb(m)
            for (i in segment.mask.indices) if (segment.mask[i].toInt() != 0) layer[i] = argb
        }
        return layer
    }

    /** spec's `overlay(image, result, alpha)` on (H, W, 3) RGB bytes, in float32 as numpy computes it. */
    fun blend(rgb: ByteArray, result: SegmentResult, alpha: Float = ALPHA): ByteArray {
        require(rgb.size == result.height * result.width * 3) { "the image is not the result's size" }
        val out = FloatArray(rgb.size) { (rgb[it].toInt() and 0xFF).toFloat() }
        result.segments.forEachIndexed { m, segment ->
            val color = paletteRgb(m)
            for (i in segment.mask.indices) {
                if (segment.mask[i].toInt() == 0) continue
                for (c in 0..2) {
                    val channel = ((color shr (16 - 8 * c)) and 0xFF).toFloat()
                    out[i * 3 + c] = (1 - alpha) * out[i * 3 + c] + alpha * channel
                }
            }
        }
        return ByteArray(out.size) { Math.floor(out[it] + 0.5).coerceIn(0.0, 255.0).toInt().toByte() }
    }

    /** The smallest [x0, y0, x1, y1) rectangle holding the mask's pixels, or null for an empty mask. */
    fun boundingBox(mask: ByteArray, height: Int, width: Int): IntArray? {
        var x0 = width
        var y0 = height
        var x1 = -1
        var y1 = -1
        for (y in 0 until height) for (x in 0 until width) {
            if (mask[y * width + x].toInt() == 0) continue
            if (x < x0) x0 = x
            if (x > x1) x1 = x
            if (y < y0) y0 = y
            if (y > y1) y1 = y
        }
        return if (x1 < 0) null else intArrayOf(x0, y0, x1 + 1, y1 + 1)
    }

    /** spec's annotate caption: "label · 0.98". */
    fun caption(segment: Segment): String = "${segment.label} \u00b7 ${formatScore(segment.score)}"

    fun formatScore(score: Float): String = String.format(Locale.ROOT, "%.2f", score)

    /**
     * Top-left corner of a label box of [boxWidth] x [boxHeight] (text plus 2 px padding each side) for a mask
     * whose bounding box is [box]: above the mask when there is room, kept inside the image (spec's annotate).
     */
    fun labelCorner(box: IntArray, boxWidth: Int, boxHeight: Int, imageWidth: Int, imageHeight: Int): IntArray {
        val x = minOf(maxOf(box[0], 0), maxOf(imageWidth - boxWidth, 0))
        val y = minOf(maxOf(box[1] - boxHeight, 0), maxOf(imageHeight - boxHeight, 0))
        return intArrayOf(x, y)
    }

    /** Black text on light label colours, white on dark ones (spec's annotate: luma above 140). */
    fun inkOn(rgb: Int): Int {
        val luma = 0.299 * ((rgb shr 16) and 0xFF) + 0.587 * ((rgb shr 8) and 0xFF) + 0.114 * (rgb and 0xFF)
        return if (luma > 140) 0x000000 else 0xFFFFFF
    }

    /** Outline width in image pixels (spec's annotate: max(1, round(min(h, w) / 200)), half to even). */
    fun outlineWidth(height: Int, width: Int): Int = maxOf(1, Math.rint(minOf(height, width) / 200.0).toInt())
}

package org.xsam.edge

import java.io.File
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assume.assumeNotNull
import org.junit.Test

/** Drawing maths against spec/image_io.py's values (spec.json, when the pytest driver provides it) and by hand. */
class OverlayTest {
    private fun result(vararg masks: ByteArray, height: Int = 2, width: Int = 3) =
        SegmentResult(height, width, masks.mapIndexed { i, m -> Segment(m, "m$i", i.toLong(), 0.5f) }, null)

    @Test
    fun paletteEqualsTheSpecPalette() {
        val spec = ReferenceData.folder("xsam.spec")
        assumeNotNull(spec)
        val palette = ReferenceData.json(File(spec, "spec.json")).getJSONArray("palette")
        assertEquals(12, palette.length())
        for (i in 0 until palette.length()) {
            val c = palette.getJSONArray(i)
            assertEquals("colour $i", (c.getInt(0) shl 16) or (c.getInt(1) shl 8) or c.getInt(2), Overlay.paletteRgb(i))
        }
    }

    @Test
    fun paletteStartsRedThenDarkerCyanBlue() {
        assertEquals(0xFF0000, Overlay.paletteRgb(0))
        assertEquals(0xFFFFFF and Overlay.paletteRgb(1), Overlay.paletteRgb(1))
        assertEquals(0, (Overlay.paletteRgb(1) shr 16) and 0xFF)  // hue 0.618: no red
    }

    @Test
    fun maskLayerDrawsLaterMasksOnTop() {
        val a = byteArrayOf(1, 1, 0, 0, 0, 0)
        val b = byteArrayOf(0, 1, 1, 0, 0, 0)
        val layer = Overlay.maskLayer(result(a, b))
        val half = 128 shl 24
        assertEquals(half or Overlay.paletteRgb(0), layer[0])
        assertEquals(half or Overlay.paletteRgb(1), layer[1])
        assertEquals(half or Overlay.paletteRgb(1), layer[2])
        assertEquals(0, layer[3])
        assertEquals(255 shl 24 or Overlay.paletteRgb(0), Overlay.maskLayer(result(a), alpha = 1f)[0])
    }

    @Test
    fun blendRoundsHalfUpLikeTheSpec() {
        val rgb = byteArrayOf(0, 1, 2, 100, 101, 102, 7, 7, 7, 0, 0, 0, 0, 0, 0, 255.toByte(), 255.toByte(), 255.toByte())
        val mask = byteArrayOf(1, 1, 0, 0, 0, 1)
        val out = Overlay.blend(rgb, result(mask))
        // red (255, 0, 0): 0.5 * 0 + 127.5 = 127.5 -> 128; 0.5 * 1 = 0.5 -> 1; 0.5 * 2 = 1
        assertArrayEquals(byteArrayOf(128.toByte(), 1, 1), out.copyOfRange(0, 3))
        assertArrayEquals(byteArrayOf(178.toByte(), 51, 51), out.copyOfRange(3, 6))
        assertArrayEquals(byteArrayOf(7, 7, 7), out.copyOfRange(6, 9))
        assertArrayEquals(byteArrayOf(255.toByte(), 128.toByte(), 128.toByte()), out.copyOfRange(15, 18))
    }

    @Test
    fun boundingBoxIsHalfOpenAndNullWhenEmpty() {
        val mask = ByteArray(4 * 5)
        mask[1 * 5 + 2] = 1
        mask[3 * 5 + 4] = 1
        assertArrayEquals(intArrayOf(2, 1, 5, 4), Overlay.boundingBox(mask, 4, 5))
        assertNull(Overlay.boundingBox(ByteArray(20), 4, 5))
    }

    @Test
    fun labelGoesAboveTheMaskWhenThereIsRoomAndStaysInside() {
        assertArrayEquals(intArrayOf(10, 8), Overlay.labelCorner(intArrayOf(10, 20, 30, 40), 50, 12, 100, 80))
        assertArrayEquals(intArrayOf(10, 0), Overlay.labelCorner(intArrayOf(10, 5, 30, 40), 50, 12, 100, 80))
        assertArrayEquals(intArrayOf(50, 0), Overlay.labelCorner(intArrayOf(90, 5, 99, 40), 50, 12, 100, 80))
        assertArrayEquals(intArrayOf(0, 0), Overlay.labelCorner(intArrayOf(3, 3, 5, 5), 150, 120, 100, 80))
    }

    @Test
    fun captionsScoresInkAndOutlines() {
        assertEquals("0.98", Overlay.formatScore(0.9849f))
        assertEquals("1.00", Overlay.formatScore(0.99999f))
        assertEquals("sky \u00b7 0.25", Overlay.caption(Segment(ByteArray(0), "sky", 1, 0.2501f)))
        assertEquals(0x000000, Overlay.inkOn(0xFFFF00))
        assertEquals(0xFFFFFF, Overlay.inkOn(0x0000BF))
        assertEquals(1, Overlay.outlineWidth(48, 80))
        assertEquals(2, Overlay.outlineWidth(500, 600))  // 2.5 rounds to even, as Python's round()
        assertEquals(4, Overlay.outlineWidth(700, 1000))
    }
}

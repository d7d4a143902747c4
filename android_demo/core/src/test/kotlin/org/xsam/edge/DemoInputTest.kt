package org.xsam.edge

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

/** The demo screen's inputs: text and gestures to requests, photo sizes, Bitmap pixels to RGB. */
class DemoInputTest {
    private val gestures = PromptGestures(FitTransform(80, 48, 400f, 400f))

    @Test
    fun textModeAsksAReferringQuestionAndIgnoresPrompts() {
        val r = DemoInput.request(InputMode.TEXT, "  the red circle ", listOf(Prompt.Point(1.0, 2.0)))
        assertEquals(SegmentRequest(Task.REFERRING, text = "the red circle"), r)
        assertNull(DemoInput.request(InputMode.TEXT, "   ", emptyList()))
    }

    @Test
    fun drawingModesAskInteractiveQuestions() {
        val prompts = listOf(Prompt.Point(1.0, 2.0), Prompt.Box(0.0, 0.0, 3.0, 3.0))
        assertEquals(SegmentRequest(Task.INTERACTIVE, prompts = prompts), DemoInput.request(InputMode.BOX, "ignored", prompts))
        assertNull(DemoInput.request(InputMode.POINT, "", emptyList()))
    }

    @Test
    fun gesturesBecomeTheModesPrompt() {
        val path = listOf(ViewPoint(50f, 100f), ViewPoint(75f, 120f), ViewPoint(100f, 140f))
        assertEquals(Prompt.Point(20.0, 12.0), DemoInput.prompt(InputMode.POINT, gestures, path))
        assertEquals(Prompt.Box(10.0, 4.0, 20.0, 12.0), DemoInput.prompt(InputMode.BOX, gestures, path))
        val scribble = DemoInput.prompt(InputMode.SCRIBBLE, gestures, path) as Prompt.Scribble
        assertEquals(3, scribble.points.size)
        assertNull(DemoInput.prompt(InputMode.TEXT, gestures, path))
        assertNull(DemoInput.prompt(InputMode.POINT, gestures, emptyList()))
    }

    @Test
    fun photosShrinkToTheMaxSideKeepingTheAspect() {
        assertArrayEquals(intArrayOf(1024, 768), DemoInput.scaledSize(4032, 3024))
        assertArrayEquals(intArrayOf(576, 1024), DemoInput.scaledSize(2268, 4032))
        assertArrayEquals(intArrayOf(80, 48), DemoInput.scaledSize(80, 48))
    }

    @Test
    fun argbPixelsLoseAlphaAndKeepChannelOrder() {
        val rgb = DemoInput.argbToRgb(intArrayOf(0x80FF0102.toInt(), 0xFF00FFFE.toInt()))
        assertArrayEquals(byteArrayOf(255.toByte(), 1, 2, 0, 255.toByte(), 254.toByte()), rgb)
    }
}

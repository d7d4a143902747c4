package org.xsam.edge

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Test

/** View <-> image maps for a fit-centred image, and gestures turned into prompts in image pixels. */
class ViewMappingTest {
    // an 80 x 48 image in a 400 x 400 view: scale 5, bars of 80 px above and below
    private val fit = FitTransform(80, 48, 400f, 400f)

    @Test
    fun fitScalesByTheTighterSideAndCentres() {
        assertEquals(5f, fit.scale, 0f)
        assertEquals(0f, fit.offsetX, 0f)
        assertEquals(80f, fit.offsetY, 0f)
        val tall = FitTransform(100, 200, 300f, 300f)
        assertEquals(1.5f, tall.scale, 0f)
        assertEquals(75f, tall.offsetX, 0f)
        assertEquals(0f, tall.offsetY, 0f)
    }

    @Test
    fun tapsMapToImagePixelsAndBarsGiveNothing() {
        assertEquals(Prompt.Point(40.0, 24.0), fit.toImage(ViewPoint(200f, 200f)))
        assertEquals(Prompt.Point(0.0, 0.0), fit.toImage(ViewPoint(0f, 80f)))
        assertNull(fit.toImage(ViewPoint(200f, 40f)))
        assertNull(fit.toImage(ViewPoint(200f, 330f)))
        val back = fit.toView(40.0, 24.0)
        assertEquals(ViewPoint(200f, 200f), back)
    }

    @Test
    fun dragsGiveBoxesEitherWayClampedToTheImage() {
        val gestures = PromptGestures(fit)
        assertEquals(Prompt.Box(10.0, 4.0, 20.0, 12.0), gestures.box(ViewPoint(100f, 140f), ViewPoint(50f, 100f)))
        assertEquals(Prompt.Box(70.0, 0.0, 80.0, 48.0), gestures.box(ViewPoint(350f, 0f), ViewPoint(500f, 400f)))
        assertNull(gestures.box(ViewPoint(100f, 100f), ViewPoint(102f, 140f)))  // under a pixel wide
    }

    @Test
    fun scribblesDropPointsCloserThanTheSpacing() {
        val path = listOf(ViewPoint(0f, 80f), ViewPoint(2f, 80f), ViewPoint(5f, 80f), ViewPoint(5f, 90f), ViewPoint(-50f, 0f))
        val scribble = PromptGestures(fit).scribble(path)!!
        assertEquals(listOf(Prompt.Point(0.0, 0.0), Prompt.Point(1.0, 0.0), Prompt.Point(1.0, 2.0), Prompt.Point(0.0, 0.0)), scribble.points)
        assertNull(PromptGestures(fit).scribble(emptyList()))
    }
}

package org.xsam.edge

import java.io.File
import java.util.Base64
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Assume.assumeNotNull
import org.junit.Before
import org.junit.Test

/**
 * The Kotlin core over libxsam_jni on the tiny reference bundle: every request of dump_reference.py gives
 * EdgeSession's answer (labels, ids, scores, masks, text), and failures come back as exceptions with the
 * core's message, never a crash.
 */
class NativeSessionTest {
    private lateinit var reference: File
    private lateinit var bundle: File

    @Before
    fun setUp() {
        val folder = ReferenceData.folder("xsam.reference")
        assumeNotNull(folder)  // run by tests/test_android_demo.py, which passes the reference folder
        reference = folder!!
        bundle = File(reference, "bundle")
    }

    private fun openWithImage(): Pair<XSamSession, ByteArray> {
        val (h, w, rgb) = ReferenceData.readRgb(File(reference, "parity/image.png"))
        val session = XSamSession.open(bundle)
        session.setImage(rgb, h, w)
        return Pair(session, rgb)
    }

    @Test
    fun everyReferenceRequestMatchesEdgeSession() {
        val parity = File(reference, "parity")
        val requests = ReferenceData.json(File(parity, "requests.json")).getJSONArray("requests")
        val answers = ReferenceData.json(File(parity, "expected.json")).getJSONArray("answers")
        assertEquals(13, requests.length())
        val (session, _) = openWithImage()
        session.use {
            var worstScore = 0.0
            var worstIou = 1.0
            for (i in 0 until requests.length()) {
                val expected = answers.getJSONObject(i)
                val got = session.segment(ReferenceData.request(requests.getJSONObject(i), parity))
                val where = "request $i (${requests.getJSONObject(i).getString("task")})"
                assertEquals(where, expected.getInt("height"), got.height)
                assertEquals(where, expected.getInt("width"), got.width)
                assertEquals(where, ReferenceData.strings(expected.getJSONArray("labels")), got.segments.map { it.label })
                val ids = expected.getJSONArray("label_ids")
                assertEquals(where, (0 until ids.length()).map { ids.getLong(it) }, got.segments.map { it.labelId })
                val scores = expected.getJSONArray("scores")
                val rles = expected.getJSONArray("rle")
                got.segments.forEachIndexed { k, segment ->
                    worstScore = maxOf(worstScore, Math.abs(scores.getDouble(k) - segment.score))
                    worstIou = minOf(worstIou, ReferenceData.iou(ReferenceData.unRle(rles.getJSONArray(k), got.height * got.width), segment.mask))
                }
                assertEquals(where, if (expected.isNull("text")) null else expected.getString("text"), got.text)
            }
            println("kotlin parity vs EdgeSession: ${requests.length()} requests, worst score diff $worstScore, worst mask IoU $worstIou")
            assertTrue("worst score difference $worstScore", worstScore < 1e-4)
            assertTrue("worst mask IoU $worstIou", worstIou >= 0.99)
        }
    }

    @Test
    fun referringAndPointRequestsAreNotEmpty() {
        val (session, _) = openWithImage()
        session.use {
            val referring = session.segment(SegmentRequest(Task.REFERRING, text = "the red circle"))
            assertEquals(listOf("the red circle"), referring.segments.map { it.label })
            assertTrue(referring.segments[0].mask.any { it.toInt() != 0 })
            val point = session.segment(SegmentRequest(Task.INTERACTIVE, prompts = listOf(Prompt.Point(30.0, 20.0))))
            assertEquals(listOf("prompt 0"), point.segments.map { it.label })
            assertEquals(80 * 48, point.segments[0].mask.size)
        }
    }

    @Test
    fun blendEqualsTheSpecOverlay() {
        val spec = ReferenceData.folder("xsam.spec")
        assumeNotNull(spec)
        val overlays = ReferenceData.json(File(spec, "spec.json")).getJSONObject("overlays")
        val parity = File(reference, "parity")
        val requests = ReferenceData.json(File(parity, "requests.json")).getJSONArray("requests")
        val (session, rgb) = openWithImage()
        session.use {
            for (name in overlays.keys()) {
                val key = name as String  // Android's org.json hands out a raw Iterator
                val result = session.segment(ReferenceData.request(requests.getJSONObject(key.toInt()), parity))
                val expected = Base64.getDecoder().decode(overlays.getString(key))
                assertArrayEquals("overlay of request $key", expected, Overlay.blend(rgb, result))
            }
        }
    }

    @Test
    fun openingWithoutChecksumsAnswersTheSame() {
        val (h, w, rgb) = ReferenceData.readRgb(File(reference, "parity/image.png"))
        val request = SegmentRequest(Task.INTERACTIVE, prompts = listOf(Prompt.Box(5.0, 5.0, 40.0, 30.0)))
        val fast = XSamSession.open(bundle, verifyChecksums = false).use { it.setImage(rgb, h, w); it.segment(request) }
        val (session, _) = openWithImage()
        val checked = session.use { it.segment(request) }
        assertEquals(checked.segments.map { it.score }, fast.segments.map { it.score })
        assertArrayEquals(checked.segments[0].mask, fast.segments[0].mask)
    }

    @Test
    fun aMissingBundleIsABundleErrorWithTheCoreMessage() {
        val missing = File(reference, "no-such-bundle")
        try {
            XSamSession.open(missing)
            fail("opened a missing bundle")
        } catch (e: XSamException) {
            assertTrue(e.status == XSamException.Status.BUNDLE_ERROR || e.status == XSamException.Status.IO_ERROR)
            assertTrue(e.message, e.message!!.contains("no-such-bundle"))
        }
    }

    @Test
    fun aFolderThatIsNoBundleIsRefused() {
        try {
            XSamSession.open(File(reference, "parity"))
            fail("opened the parity folder as a bundle")
        } catch (e: XSamException) {
            assertTrue(e.message, e.message!!.contains("manifest.json"))
        }
    }

    @Test
    fun segmentBeforeAnImageIsAnOrderError() {
        XSamSession.open(bundle).use { session ->
            try {
                session.segment(SegmentRequest(Task.REFERRING, text = "the red circle"))
                fail("segmented without an image")
            } catch (e: XSamException) {
                assertEquals(XSamException.Status.ORDER_ERROR, e.status)
                assertTrue(e.message, e.message!!.contains("xsam_set_image"))
            }
        }
    }

    @Test
    fun badRequestsAndSizesAreExceptions() {
        val (session, _) = openWithImage()
        session.use {
            try {
                session.segment(SegmentRequest(Task.INTERACTIVE))  // interactive without a prompt
                fail("answered an interactive request without prompts")
            } catch (e: XSamException) {
                assertEquals(XSamException.Status.INVALID_ARGUMENT, e.status)
                assertTrue(e.message!!.isNotEmpty())
            }
            try {
                XSamNative.setImage(0L, ByteArray(5), 2, 2)  // the JNI layer checks sizes itself
                fail("JNI accepted a short RGB array")
            } catch (e: IllegalArgumentException) {
                assertTrue(e.message, e.message!!.contains("height * width * 3"))
            }
            assertEquals(0L, XSamNative.requestNew("segment everything".toByteArray()))
            assertTrue(XSamException.lastErrorMessage().isNotEmpty())
        }
        try {
            session.segment(SegmentRequest(Task.REFERRING, text = "x"))
            fail("a closed session answered")
        } catch (e: IllegalStateException) {
            assertNotNull(e.message)
        }
    }

    @Test
    fun selfcheckPassesOnTheReferenceBundle() {
        XSamSession.open(bundle).use { session ->
            val report = session.selfcheck()
            println("kotlin selfcheck: ${report.summary()}")
            assertTrue(report.summary(), report.passed)
            assertEquals(3, report.requests)
            assertTrue(report.summary(), report.worstLogitDiff < 1e-4)
            assertTrue(report.summary(), report.worstMaskIou >= 0.99)
            assertTrue(report.summary(), report.summary().startsWith("PASS: 3 golden requests"))
        }
    }

    @Test
    fun selfcheckFailsOnImpossibleTolerancesAndRefusesBadOnes() {
        val (session, rgb) = openWithImage()
        session.use {
            val strict = session.selfcheck(atol = 0.0, minIou = 1.01)
            assertEquals(false, strict.passed)
            assertEquals(3, strict.requests)
            assertTrue(strict.summary(), strict.summary().startsWith("FAIL"))
            try {
                session.selfcheck(atol = -1.0)
                fail("a negative atol was accepted")
            } catch (e: XSamException) {
                assertEquals(XSamException.Status.INVALID_ARGUMENT, e.status)
                assertTrue(e.message, e.message!!.contains("atol"))
            }
            // the session still answers its own image after the golden images
            val point = session.segment(SegmentRequest(Task.INTERACTIVE, prompts = listOf(Prompt.Point(30.0, 20.0))))
            assertEquals(rgb.size / 3, point.segments[0].mask.size)
        }
    }

    @Test
    fun utf8TextSurvivesTheJniBoundary() {
        val (session, _) = openWithImage()
        session.use {
            // characters outside the BMP are where JNI's modified UTF-8 would differ from UTF-8
            val text = "the red circle \uD83D\uDE42 caf\u00e9"
            val result = session.segment(SegmentRequest(Task.REFERRING, text = text))
            assertEquals(listOf(text), result.segments.map { it.label })
            assertNull(result.text)
        }
    }
}

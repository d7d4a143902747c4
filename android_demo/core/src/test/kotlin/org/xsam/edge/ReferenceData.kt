package org.xsam.edge

import java.io.File
import javax.imageio.ImageIO
import org.json.JSONArray
import org.json.JSONObject

/**
 * The reference data of native/tools/dump_reference.py (parity/: requests.json, expected.json, PNGs) and the
 * spec values tests/test_android_demo.py writes (spec.json), read into the core's types. Folders come from
 * the system properties xsam.reference and xsam.spec; tests that need them are skipped without.
 */
object ReferenceData {
    fun folder(property: String): File? = System.getProperty(property)?.let { File(it) }?.takeIf { it.isDirectory }

    fun json(file: File): JSONObject = JSONObject(file.readText())

    /** (height, width, rgb bytes) of a PNG; grey images come back with three equal channels. */
    fun readRgb(file: File): Triple<Int, Int, ByteArray> {
        val image = ImageIO.read(file) ?: throw IllegalArgumentException("not an image: $file")
        val rgb = ByteArray(image.height * image.width * 3)
        for (y in 0 until image.height) for (x in 0 until image.width) {
            val argb = image.getRGB(x, y)
            val i = (y * image.width + x) * 3
            rgb[i] = (argb shr 16).toByte()
            rgb[i + 1] = (argb shr 8).toByte()
            rgb[i + 2] = argb.toByte()
        }
        return Triple(image.height, image.width, rgb)
    }

    /** One entry of requests.json (spec/golden.py's prompt_to_json) as a [SegmentRequest]. */
    fun request(entry: JSONObject, folder: File): SegmentRequest {
        val prompts = ArrayList<Prompt>()
        val list = entry.getJSONArray("prompts")
        for (i in 0 until list.length()) prompts.add(prompt(list.getJSONObject(i), folder))
        return SegmentRequest(
            task = Task.fromWireName(entry.getString("task")),
            text = if (entry.isNull("text")) null else entry.getString("text"),
            categories = strings(entry.getJSONArray("categories")),
            prompts = prompts
        )
    }

    private fun prompt(p: JSONObject, folder: File): Prompt = when (p.getString("type")) {
        "point" -> Prompt.Point(p.getDouble("x"), p.getDouble("y"))
        "box" -> p.getJSONArray("xyxy").let { Prompt.Box(it.getDouble(0), it.getDouble(1), it.getDouble(2), it.getDouble(3)) }
        "scribble" -> p.getJSONArray("points").let { pts ->
            Prompt.Scribble((0 until pts.length()).map { pts.getJSONArray(it).let { q -> Prompt.Point(q.getDouble(0), q.getDouble(1)) } })
        }
        "mask" -> {
            val (h, w, rgb) = readRgb(File(folder, p.getString("file")))
            Prompt.Mask(ByteArray(h * w) { if (rgb[it * 3].toInt() != 0) 1 else 0 }, h, w)
        }
        else -> throw IllegalArgumentException("unknown prompt type ${p.getString("type")}")
    }

    fun strings(array: JSONArray): List<String> = (0 until array.length()).map { array.getString(it) }

    /** dump_reference.py's run lengths (first run is background) back to a height * width 0/1 mask. */
    fun unRle(runs: JSONArray, size: Int): ByteArray {
        val mask = ByteArray(size)
        var at = 0
        for (r in 0 until runs.length()) {
            val n = runs.getInt(r)
            if (r % 2 == 1) for (i in at until at + n) mask[i] = 1
            at += n
        }
        require(at == size) { "run lengths cover $at pixels, not $size" }
        return mask
    }

    fun iou(a: ByteArray, b: ByteArray): Double {
        var inter = 0
        var union = 0
        for (i in a.indices) {
            val x = a[i].toInt() != 0
            val y = b[i].toInt() != 0
            if (x && y) inter++
            if (x || y) union++
        }
        return if (union == 0) 1.0 else inter.toDouble() / union
    }
}

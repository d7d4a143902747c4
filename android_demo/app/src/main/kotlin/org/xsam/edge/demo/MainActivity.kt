package org.xsam.edge.demo

import android.app.AlertDialog
import android.graphics.Bitmap
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import java.io.File
import java.util.concurrent.Executors
import org.xsam.edge.DemoInput
import org.xsam.edge.InputMode
import org.xsam.edge.XSamSession

/**
 * One screen: pick or take a photo, type a query or draw points / boxes / scribbles, see the masks; Self-check
 * runs the bundle's golden vectors on this device and shows the verdict. The bundle
 * is read from the app's external files folder (adb push, see README.md). All core calls run on one worker
 * thread: a session is not thread-safe and its last error is per thread.
 */
class MainActivity : ComponentActivity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val main = Handler(Looper.getMainLooper())
    private var session: XSamSession? = null
    private var hasImage = false

    private lateinit var view: SegmentView
    private lateinit var query: EditText
    private lateinit var status: TextView
    private lateinit var modeButton: Button

    private val pick = registerForActivityResult(ActivityResultContracts.GetContent()) { uri ->
        uri?.let { u -> load { Bitmaps.decode(contentResolver, u) } }
    }
    private val camera = registerForActivityResult(ActivityResultContracts.TakePicturePreview()) { bitmap ->
        bitmap?.let { b -> load { Bitmaps.shrink(b) } }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        view = SegmentView(this)
        query = EditText(this).apply { hint = "the red circle" }
        status = TextView(this)
        modeButton = Button(this).apply { setOnClickListener { nextMode() } }
        view.onPromptsChanged = { status.text = "${view.prompts.size} prompt(s); tap Segment" }
        val buttons = LinearLayout(this).apply {
            addView(button("Photo") { pick.launch("image/*") })
            addView(button("Camera") { camera.launch(null) })
            addView(modeButton)
            addView(button("Clear") { view.prompts.clear(); view.clearAnswer() })
            addView(button("Segment") { segment() })
            addView(button("Self-check") { selfcheck() })
        }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(buttons)
            addView(query)
            addView(status)
            addView(view, LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT, 0, 1f))
        })
        showMode()
        openBundle()
    }

    override fun onDestroy() {
        worker.execute { session?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    private fun button(label: String, action: () -> Unit) = Button(this).apply {
        text = label
        setOnClickListener { action() }
    }

    private fun nextMode() {
        view.mode = InputMode.values()[(view.mode.ordinal + 1) % InputMode.values().size]
        view.prompts.clear()
        showMode()
    }

    private fun showMode() {
        modeButton.text = view.mode.name.lowercase()
        query.isEnabled = view.mode == InputMode.TEXT
    }

    private fun openBundle() {
        val bundle = File(getExternalFilesDir(null), "bundle")
        status.text = "opening $bundle"
        onWorker({ XSamSession.open(bundle) }) { s ->
            session = s
            status.text = "bundle ready: pick a photo"
        }
    }

    private fun load(decode: () -> Bitmap) {
        onWorker({
            val bitmap = decode()
            val s = session ?: throw IllegalStateException("no bundle open")
            s.setImage(Bitmaps.rgb(bitmap), bitmap.height, bitmap.width)  // encodes the image once
            bitmap
        }) { bitmap ->
            hasImage = true
            view.showImage(bitmap)
            status.text = "${bitmap.width} x ${bitmap.height}: type a query or draw, then Segment"
        }
    }

    private fun segment() {
        val s = session ?: return
        if (!hasImage) return
        val request = DemoInput.request(view.mode, query.text.toString(), view.prompts) ?: run {
            status.text = if (view.mode == InputMode.TEXT) "type a query" else "draw a prompt first"
            return
        }
        status.text = "segmenting..."
        val start = System.nanoTime()
        onWorker({ s.segment(request) }) { answer ->
            val ms = (System.nanoTime() - start) / 1_000_000
            view.showResult(answer)
            val text = answer.text?.let { ": $it" }.orEmpty()
            status.text = "${answer.segments.size} mask(s) in $ms ms$text"
        }
    }

    /** The bundle's golden vectors at the runner's tolerances (atol 1e-3, min IoU 0.99), shown in a dialog. */
    private fun selfcheck() {
        val s = session ?: run {
            status.text = "no bundle open"
            return
        }
        status.text = "self-check: running the golden vectors..."
        val start = System.nanoTime()
        onWorker({ s.selfcheck() }) { report ->
            val ms = (System.nanoTime() - start) / 1_000_000
            status.text = "self-check ${if (report.passed) "passed" else "FAILED"} in $ms ms"
            AlertDialog.Builder(this)
                .setTitle(if (report.passed) "Self-check passed" else "Self-check failed")
                .setMessage(report.summary())
                .setPositiveButton(android.R.string.ok, null)
                .show()
        }
    }

    /** Runs [work] on the worker thread, then [done] on the main thread; any failure is shown as the status. */
    private fun <T> onWorker(work: () -> T, done: (T) -> Unit) {
        worker.execute {
            val outcome = runCatching(work)
            main.post {
                if (isDestroyed) return@post
                outcome.fold(done) { e -> status.text = "error: ${e.message}" }
            }
        }
    }
}

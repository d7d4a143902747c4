package org.xsam.edge.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Paint
import android.graphics.Path
import android.view.MotionEvent
import android.view.View
import org.xsam.edge.DemoInput
import org.xsam.edge.FitTransform
import org.xsam.edge.InputMode
import org.xsam.edge.Overlay
import org.xsam.edge.Prompt
import org.xsam.edge.PromptGestures
import org.xsam.edge.SegmentResult
import org.xsam.edge.ViewPoint

/**
 * The photo fitted and centred, the answer's masks over it with labels, and the prompts drawn so far. Touches
 * become prompts in image pixels (through :core's FitTransform / DemoInput) in the current [mode].
 */
class SegmentView(context: Context) : View(context) {
    var mode: InputMode = InputMode.TEXT
    val prompts = ArrayList<Prompt>()
    var onPromptsChanged: () -> Unit = {}

    private var image: Bitmap? = null
    private var layer: Bitmap? = null
    private var result: SegmentResult? = null
    private val path = ArrayList<ViewPoint>()
    private val promptPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        style = Paint.Style.STROKE
        strokeWidth = 6f
        color = 0xFFFFEB3B.toInt()
    }
    private val fill = Paint(Paint.ANTI_ALIAS_FLAG)
    private val text = Paint(Paint.ANTI_ALIAS_FLAG)

    fun showImage(bitmap: Bitmap) {
        image = bitmap
        clearAnswer()
        prompts.clear()
        invalidate()
    }

    fun showResult(answer: SegmentResult) {
        result = answer
        layer = Bitmaps.layer(Overlay.maskLayer(answer), answer.width, answer.height)
        invalidate()
    }

    fun clearAnswer() {
        result = null
        layer = null
        invalidate()
    }

    private fun fit(): FitTransform? =
        image?.takeIf { width > 0 && height > 0 }?.let { FitTransform(it.width, it.height, width.toFloat(), height.toFloat()) }

    override fun onDraw(canvas: Canvas) {
        val bitmap = image ?: return
        val fit = fit() ?: return
        canvas.save()
        canvas.translate(fit.offsetX, fit.offsetY)
        canvas.scale(fit.scale, fit.scale)
        canvas.drawBitmap(bitmap, 0f, 0f, null)
        layer?.let { canvas.drawBitmap(it, 0f, 0f, null) }
        result?.let { drawLabels(canvas, it) }
        canvas.restore()
        drawPrompts(canvas, fit)
    }

    /** Labels in image pixels (the canvas is scaled), placed as spec's annotate places them. */
    private fun drawLabels(canvas: Canvas, answer: SegmentResult) {
        text.textSize = maxOf(10f, Math.round(minOf(answer.height, answer.width) / 28f).toFloat())
        answer.segments.forEachIndexed { i, segment ->
            val box = Overlay.boundingBox(segment.mask, answer.height, answer.width) ?: return@forEachIndexed
            val caption = Overlay.caption(segment)
            val metrics = text.fontMetrics
            val w = Math.ceil(text.measureText(caption).toDouble()).toInt() + 4
            val h = Math.ceil((metrics.descent - metrics.ascent).toDouble()).toInt() + 4
            val corner = Overlay.labelCorner(box, w, h, answer.width, answer.height)
            val rgb = Overlay.paletteRgb(i)
            fill.color = 0xFF000000.toInt() or rgb
            canvas.drawRect(corner[0].toFloat(), corner[1].toFloat(), (corner[0] + w).toFloat(), (corner[1] + h).toFloat(), fill)
            text.color = 0xFF000000.toInt() or Overlay.inkOn(rgb)
            canvas.drawText(caption, corner[0] + 2f, corner[1] + 2f - metrics.ascent, text)
        }
    }

    private fun drawPrompts(canvas: Canvas, fit: FitTransform) {
        for (p in prompts) when (p) {
            is Prompt.Point -> fit.toView(p.x, p.y).let { canvas.drawCircle(it.x, it.y, 14f, promptPaint) }
            is Prompt.Box -> {
                val a = fit.toView(p.x0, p.y0)
                val b = fit.toView(p.x1, p.y1)
                canvas.drawRect(a.x, a.y, b.x, b.y, promptPaint)
            }
            is Prompt.Scribble -> canvas.drawPath(polyline(p.points.map { fit.toView(it.x, it.y) }), promptPaint)
            is Prompt.Mask -> Unit  // the demo draws no mask prompts
        }
        if (path.size > 1) canvas.drawPath(polyline(path), promptPaint)
    }

    private fun polyline(points: List<ViewPoint>): Path = Path().apply {
        points.forEachIndexed { i, p -> if (i == 0) moveTo(p.x, p.y) else lineTo(p.x, p.y) }
    }

    override fun onTouchEvent(event: MotionEvent): Boolean {
        val fit = fit() ?: return false
        if (mode == InputMode.TEXT) return false
        when (event.actionMasked) {
            MotionEvent.ACTION_DOWN -> {
                path.clear()
                path.add(ViewPoint(event.x, event.y))
            }
            MotionEvent.ACTION_MOVE -> path.add(ViewPoint(event.x, event.y))
            MotionEvent.ACTION_UP -> {
                path.add(ViewPoint(event.x, event.y))
                DemoInput.prompt(mode, PromptGestures(fit), path)?.let {
                    prompts.add(it)
                    onPromptsChanged()
                }
                path.clear()
                performClick()
            }
            MotionEvent.ACTION_CANCEL -> path.clear()
        }
        invalidate()
        return true
    }

    override fun performClick(): Boolean = super.performClick()
}

package org.xsam.edge.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.ImageDecoder
import android.net.Uri
import org.xsam.edge.DemoInput

/** Android bitmaps to and from the core's arrays; the arithmetic lives in :core (DemoInput, Overlay). */
object Bitmaps {
    /** A picked photo, EXIF orientation applied by ImageDecoder, shrunk to DemoInput.MAX_SIDE, software ARGB. */
    fun decode(resolver: ContentResolver, uri: Uri): Bitmap {
        val source = ImageDecoder.createSource(resolver, uri)
        return ImageDecoder.decodeBitmap(source) { decoder, info, _ ->
            val (w, h) = DemoInput.scaledSize(info.size.width, info.size.height).let { it[0] to it[1] }
            decoder.setTargetSize(w, h)
            decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE  // getPixels needs a CPU-side bitmap
        }.copy(Bitmap.Config.ARGB_8888, false)
    }

    /** A camera preview bitmap (already small) as a software ARGB_8888 copy within DemoInput.MAX_SIDE. */
    fun shrink(bitmap: Bitmap): Bitmap {
        val size = DemoInput.scaledSize(bitmap.width, bitmap.height)
        val scaled = if (size[0] == bitmap.width) bitmap else Bitmap.createScaledBitmap(bitmap, size[0], size[1], true)
        return scaled.copy(Bitmap.Config.ARGB_8888, false)
    }

    /** (height, width, 3) RGB bytes for XSamSession.setImage. */
    fun rgb(bitmap: Bitmap): ByteArray {
        val argb = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(argb, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return DemoInput.argbToRgb(argb)
    }

    /** Overlay.maskLayer's ARGB pixels as a bitmap to draw over the photo. */
    fun layer(argb: IntArray, width: Int, height: Int): Bitmap =
        Bitmap.createBitmap(argb, width, height, Bitmap.Config.ARGB_8888)
}

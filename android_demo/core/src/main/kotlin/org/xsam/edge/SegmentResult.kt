package org.xsam.edge

/** One answered mask at the image size (row-major, 1 inside) with its label, label id and score. */
class Segment(val mask: ByteArray, val label: String, val labelId: Long, val score: Float)

/** The core's answer: masks at the image size, in the core's order (later ones drawn on top). */
class SegmentResult(val height: Int, val width: Int, val segments: List<Segment>, val text: String?)

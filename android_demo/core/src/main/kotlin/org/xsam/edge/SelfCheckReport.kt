package org.xsam.edge

/**
 * The bundle's golden vectors run on this device (xsam_selfcheck): how many requests ran, the largest logit
 * difference from the stored outputs, the smallest mask IoU, and whether every request met the tolerances.
 */
data class SelfCheckReport(
    val requests: Int,
    val worstLogitDiff: Double,
    val worstMaskIou: Double,
    val passed: Boolean,
    val atol: Double,
    val minIou: Double
) {
    /** One line for a screen or a log: "PASS: 3 golden requests, worst logit difference 2.1e-06 (atol 0.001), ...". */
    fun summary(): String = String.format(
        java.util.Locale.ROOT,
        "%s: %d golden requests, worst logit difference %.3g (atol %.3g), worst mask IoU %.4f (min %.2f)",
        if (passed) "PASS" else "FAIL", requests, worstLogitDiff, atol, worstMaskIou, minIou
    )
}

package org.xsam.edge

import kotlin.system.exitProcess
import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener

/**
 * Runs the given JUnit 4 classes and ends with "N passed, N failed, N skipped": JUnitCore alone counts a test
 * skipped by an assumption (no reference folder) as passed, and the pytest driver must tell the two apart.
 */
object JvmTestMain {
    @JvmStatic
    fun main(args: Array<String>) {
        var skipped = 0
        val core = JUnitCore()
        core.addListener(object : RunListener() {
            override fun testAssumptionFailure(failure: Failure) {
                skipped++
                println("SKIPPED ${failure.description.displayName}: ${failure.message}")
            }

            override fun testFailure(failure: Failure) {
                println("FAILED ${failure.description.displayName}: ${failure.trace}")
            }

            override fun testFinished(description: Description) {
                println("ran ${description.displayName}")
            }
        })
        val result = core.run(*args.map { Class.forName(it) }.toTypedArray())
        val failed = result.failureCount
        println("${result.runCount - failed - skipped} passed, $failed failed, $skipped skipped")
        exitProcess(if (result.wasSuccessful()) 0 else 1)
    }
}

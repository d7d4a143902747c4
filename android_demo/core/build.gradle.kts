// Plain Kotlin, no Android: bundle loading through JNI (libxsam_jni, built by :app's CMake on a phone and by
// native/ on a desktop), requests, view <-> image maps, drawing maths. tests/test_android_demo.py compiles the
// same sources with kotlinc and runs the tests on a desktop JVM; `gradle :core:test` needs -Djava.library.path
// and -Dxsam.reference (see README.md), else the native tests are skipped by their assumptions.
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
    testImplementation("org.json:json:20240303")  // the desktop stand-in for Android's built-in org.json
}

tasks.test {
    systemProperty("java.library.path", rootProject.file("../native/build-host/jni").path)
    System.getProperty("xsam.reference")?.let { systemProperty("xsam.reference", it) }
    System.getProperty("xsam.spec")?.let { systemProperty("xsam.spec", it) }
}

// The XSam demo: :core is plain Kotlin (JVM, no android.*), tested on a desktop JVM by tests/test_android_demo.py;
// :app is the one-screen Android app over it. Not built here (no Android SDK); see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "xsam-demo"
include(":core", ":app")

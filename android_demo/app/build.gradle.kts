// The one-screen demo app. Its native part is app/src/main/cpp/CMakeLists.txt: the core (native/) and its JNI
// layer (native/jni) built by the NDK against an ExecuTorch built for Android (xsam.executorchRoot).
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchRoot: String = (findProperty("xsam.executorchRoot") as String?).orEmpty()

android {
    namespace = "org.xsam.edge.demo"
    compileSdk = 34
    ndkVersion = "26.3.11579264"

    defaultConfig {
        applicationId = "org.xsam.edge.demo"
        minSdk = 28
        targetSdk = 34
        versionCode = 1
        versionName = "0.1"
        ndk {
            abiFilters += "arm64-v8a"
        }
        externalNativeBuild {
            cmake {
                arguments += listOf("-DEXECUTORCH_ROOT=$executorchRoot", "-DANDROID_STL=c++_shared")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.31.6"
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    implementation(project(":core"))
    implementation("androidx.activity:activity-ktx:1.9.2")
}

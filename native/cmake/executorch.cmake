# ExecuTorch from a pip wheel's folder. CMake < 3.28 gets no imported targets from the wheel's config, so this
# reads its variables (EXECUTORCH_INCLUDE_DIRS, EXECUTORCH_COMPILE_DEFINITIONS, EXECUTORCH_LIBRARIES) and adds the
# quantized kernels, which the wheel leaves out of the aggregate (they would clash with the Python plugin; a
# standalone program has no plugin, and quantized bundles call them outside the XNNPACK delegate).
# share/cmake: the wheel's layout; lib/cmake/ExecuTorch: a source build's install prefix (Android, iOS; untested)
find_package(executorch REQUIRED CONFIG
             PATHS "${EXECUTORCH_ROOT}/share/cmake" "${EXECUTORCH_ROOT}/lib/cmake/ExecuTorch" NO_DEFAULT_PATH
             CMAKE_FIND_ROOT_PATH_BOTH)  # the NDK toolchain would re-root these under its sysroot
if(NOT EXECUTORCH_INCLUDE_DIRS OR NOT EXECUTORCH_LIBRARIES)
  message(FATAL_ERROR "the executorch package at ${EXECUTORCH_ROOT} ships no C++ headers or libraries")
endif()
set(XSAM_EXECUTORCH_LIBS ${EXECUTORCH_LIBRARIES})
if(EXECUTORCH_QUANTIZED_KERNELS_LIBRARY)
  list(APPEND XSAM_EXECUTORCH_LIBS "${EXECUTORCH_QUANTIZED_KERNELS_LIBRARY}")
endif()
# the libraries stay in the wheel: binaries find them through their RPATH
set(CMAKE_BUILD_RPATH "${EXECUTORCH_ROOT}/lib")
message(STATUS "ExecuTorch ${EXECUTORCH_BUILD_VERSION} from ${EXECUTORCH_ROOT}")

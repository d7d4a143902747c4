"""Device profiles: where a bench runs, with which runtime settings, and how to get it running there.

A profile is a value: the backends it benches, the runtime options (ONNX Runtime execution providers, the
OpenVINO device, Core ML compute units), and the install and run instructions for that device. ``runtime``
builds the backend for a bench and fails at once, with the fix, when this machine lacks what the profile
needs.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

from xsam_edge.runtime.backends import get_backend
from xsam_edge.runtime.backends.coreml import CoreMLBackend
from xsam_edge.runtime.backends.onnx import OnnxRuntimeBackend
from xsam_edge.runtime.backends.openvino import OpenVinoBackend


@dataclass(frozen=True)
class DeviceProfile:
    """One device class.

    Args:
        name (str): registry key (``x86-cpu``, ``jetson-orin`` …).
        description (str): the hardware it stands for.
        backends (tuple[str, ...]): bundle backends it benches.
        onnx_providers (tuple[str, ...]): ONNX Runtime execution providers, in priority order.
        openvino_device (str): OpenVINO device (``CPU``, ``GPU``, ``NPU``).
        coreml_compute_units (str | None): Core ML compute units (``CPU_ONLY``, ``CPU_AND_GPU``,
            ``CPU_AND_NE``, ``ALL``).
        needs (str): the platform it needs (``linux``, ``darwin``, ``android``), ``any`` for none.
        install (str): the install command on the device.
        run (str): the bench command on the device.
    """

    name: str
    description: str
    backends: tuple[str, ...]
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    openvino_device: str = "CPU"
    coreml_compute_units: str | None = None
    needs: str = "any"
    install: str = ""
    run: str = ""

    def threads(self) -> int:
        return int(os.environ.get("XSAM_EDGE_THREADS", "0")) or (os.cpu_count() or 1)

    def runtime(self, backend: str) -> Any:
        """The backend instance with this profile's options.

        Raises:
            ValueError: the profile does not bench ``backend``.
            RuntimeError: this machine lacks the platform or runtime the profile needs (the message says what
                to install or where to run it).
        """
        if backend not in self.backends:
            raise ValueError(
                f"device profile {self.name!r} benches {', '.join(self.backends)}, not {backend!r}; pick "
                "another profile (xsam-edge bench --list-profiles)"
            )
        here = platform.system().lower()
        if self.needs == "android":
            raise RuntimeError(
                f"device profile {self.name!r} runs on the phone, not here: {self.run} "
                "(android_demo/README.md)"
            )
        if self.needs != "any" and here != self.needs:
            raise RuntimeError(
                f"device profile {self.name!r} needs {self.needs} (this is {here}); run it there: {self.run}"
            )
        try:
            if backend == "onnx":
                return OnnxRuntimeBackend(self.onnx_providers)
            if backend == "openvino":
                return OpenVinoBackend(self.openvino_device)
            if backend == "coreml":
                return CoreMLBackend(self.coreml_compute_units or "ALL")
            return get_backend(backend)
        except RuntimeError as err:
            raise RuntimeError(
                f"device profile {self.name!r}: {err}. Install on this device: {self.install}"
            ) from err

    def to_dict(self) -> dict:
        return asdict(self)


BASE_INSTALL = "pip install -c constraints.txt -e ."
PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "x86-cpu",
            "any x86-64 or arm64 CPU: ONNX Runtime, OpenVINO and ExecuTorch (XNNPACK) on the CPU",
            ("onnx", "openvino", "executorch"),
            install="pip install -c constraints.txt -e '.[export]'",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile x86-cpu",
        ),
        DeviceProfile(
            "jetson-orin",
            "NVIDIA Jetson (Orin): ONNX Runtime with the TensorRT and CUDA providers (FP16 / INT8 engines)",
            ("onnx",),
            onnx_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
            needs="linux",
            install=f"{BASE_INSTALL} && pip install onnxruntime-gpu (the JetPack wheel from the Jetson Zoo); "
            "no export stack needed",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile jetson-orin",
        ),
        DeviceProfile(
            "nvidia-cuda",
            "a desktop / server NVIDIA GPU: ONNX Runtime with the CUDA provider",
            ("onnx",),
            onnx_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
            needs="linux",
            install=f"{BASE_INSTALL} && pip install onnxruntime-gpu",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile nvidia-cuda",
        ),
        DeviceProfile(
            "intel-gpu",
            "an Intel integrated or discrete GPU through OpenVINO",
            ("openvino",),
            openvino_device="GPU",
            install=f"{BASE_INSTALL} && pip install openvino",
            run="xsam-edge bench --bundle B --backend openvino --golden G --device-profile intel-gpu",
        ),
        *(
            DeviceProfile(
                f"apple-{short}",
                f"Apple Silicon Mac: Core ML on compute units {units}, and ExecuTorch (XNNPACK) on the CPU",
                ("coreml", "executorch"),
                coreml_compute_units=units,
                needs="darwin",
                install=f"{BASE_INSTALL} && pip install coremltools executorch",
                run=f"xsam-edge bench --bundle B --backend coreml --golden G --device-profile apple-{short}",
            )
            for short, units in (
                ("cpu", "CPU_ONLY"),
                ("gpu", "CPU_AND_GPU"),
                ("ane", "CPU_AND_NE"),
                ("all", "ALL"),
            )
        ),
        DeviceProfile(
            "android-arm64",
            "an arm64 Android phone: the ExecuTorch runtime with XNNPACK",
            ("executorch",),
            needs="android",
            install="build android_demo (Gradle, ExecuTorch AAR) and adb push the bundle to /data/local/tmp",
            run="the demo app's bench mode over adb (not built yet)",
        ),
    )
}


def get_profile(name: str) -> DeviceProfile:
    """The registered profile ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown device profile {name!r}; known profiles: {', '.join(PROFILES)}") from None

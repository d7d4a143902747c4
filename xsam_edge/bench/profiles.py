"""Device profiles: where a bench runs, with which runtime settings, and how to get it running there.

A profile is a value: the backends it benches (from the backend registry), each backend's runtime options
(ONNX Runtime execution providers, the OpenVINO device, Core ML compute units), and the install and run
instructions for that device. ``runtime``
builds the backend for a bench and fails at once, with the fix, when this machine lacks what the profile
needs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from xsam_edge.backends import BACKENDS, get_backend


@dataclass(frozen=True)
class DeviceProfile:
    """One device class.

    Args:
        name (str): registry key (``x86-cpu``, ``jetson-orin`` …).
        description (str): the hardware it stands for.
        backends (tuple[str, ...] | None): bundle backends it benches; ``None``: every registered backend
            whose runtime runs on a plain CPU (``Backend.host_cpu``), read from the registry when asked.
        options (Mapping[str, Mapping[str, Any]]): per backend, its runtime's constructor options (ONNX
            Runtime ``providers``, the OpenVINO ``device``, Core ML ``compute_units``).
        needs (str): the platform it needs (``linux``, ``darwin``, ``android``), ``any`` for none.
        install (str): the install command on the device.
        run (str): the bench command on the device.
    """

    name: str
    description: str
    backends: tuple[str, ...] | None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    needs: str = "any"
    install: str = ""
    run: str = ""

    def bench_backends(self) -> tuple[str, ...]:
        """The backends this profile benches (the registry's CPU backends for a ``None`` list)."""
        if self.backends is not None:
            return self.backends
        return tuple(name for name, b in BACKENDS.items() if b.host_cpu)

    def threads(self) -> int:
        return int(os.environ.get("XSAM_EDGE_THREADS", "0")) or (os.cpu_count() or 1)

    def runtime(self, backend: str) -> Any:
        """The backend's runtime with this profile's options.

        Raises:
            ValueError: the profile does not bench ``backend``.
            RuntimeError: this machine lacks the platform or runtime the profile needs (the message says what
                to install or where to run it).
        """
        if backend not in self.bench_backends():
            raise ValueError(
                f"device profile {self.name!r} benches {', '.join(self.bench_backends())}, not {backend!r}; "
                "pick another profile (xsam-edge bench --list-profiles)"
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
            return get_backend(backend).make_runtime(**self.options.get(backend, {}))
        except RuntimeError as err:
            raise RuntimeError(
                f"device profile {self.name!r}: {err}. Install on this device: {self.install}"
            ) from err

    def to_dict(self) -> dict:
        return {**asdict(self), "backends": list(self.bench_backends()), "options": dict(self.options)}


BASE_INSTALL = "pip install -c constraints.txt -e ."
PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(
            "x86-cpu",
            "any x86-64 or arm64 CPU: every backend whose runtime runs on a CPU (ONNX Runtime, OpenVINO, "
            "ExecuTorch with XNNPACK)",
            None,
            install="pip install -c constraints.txt -e '.[export]'",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile x86-cpu",
        ),
        DeviceProfile(
            "jetson-orin",
            "NVIDIA Jetson (Orin): ONNX Runtime with the TensorRT and CUDA providers (FP16 / INT8 engines)",
            ("onnx",),
            {
                "onnx": {
                    "providers": (
                        "TensorrtExecutionProvider",
                        "CUDAExecutionProvider",
                        "CPUExecutionProvider",
                    )
                }
            },
            needs="linux",
            install=f"{BASE_INSTALL} && pip install onnxruntime-gpu (the JetPack wheel from the Jetson Zoo); "
            "no export stack needed",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile jetson-orin",
        ),
        DeviceProfile(
            "nvidia-cuda",
            "a desktop / server NVIDIA GPU: ONNX Runtime with the CUDA provider",
            ("onnx",),
            {"onnx": {"providers": ("CUDAExecutionProvider", "CPUExecutionProvider")}},
            needs="linux",
            install=f"{BASE_INSTALL} && pip install onnxruntime-gpu",
            run="xsam-edge bench --bundle B --backend onnx --golden G --device-profile nvidia-cuda",
        ),
        DeviceProfile(
            "intel-gpu",
            "an Intel integrated or discrete GPU through OpenVINO",
            ("openvino",),
            {"openvino": {"device": "GPU"}},
            install=f"{BASE_INSTALL} && pip install openvino",
            run="xsam-edge bench --bundle B --backend openvino --golden G --device-profile intel-gpu",
        ),
        *(
            DeviceProfile(
                f"apple-{short}",
                f"Apple Silicon Mac: Core ML on compute units {units}, and ExecuTorch (XNNPACK) on the CPU",
                ("coreml", "executorch"),
                {"coreml": {"compute_units": units}},
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
            install="build native/ with the NDK (native/README.md); adb push xsam_runner, the ExecuTorch "
            "libraries and the bundle to /data/local/tmp",
            run="adb shell xsam_runner bench --bundle B --out bench.json; adb pull bench.json; "
            "xsam-edge bench --import bench.json",
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

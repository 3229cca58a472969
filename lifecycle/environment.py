"""The hardware and software a report was measured on, as flat scalars (so `dvc metrics` and `compare` show them
beside the numbers they explain: a speed-up or an int8 accuracy means little without the CPU's instruction set).

Not imported by the training stages' code: a new library version must not invalidate a trained model.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# The instruction-set extensions that change what fast kernels (int8, bf16, fp32 SIMD) a CPU runs, in report order.
KNOWN_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "asimdhp",
               "i8mm", "bf16", "sve", "sve2")
PACKAGES = ("torch", "transformers", "onnxruntime", "optimum")
ALTERNATIVES = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime-openvino")}  # same module, another distribution
NOT_INSTALLED = "not installed"


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str) -> str:
    """The CPU's name: "model name" on x86, "Model"/"Hardware" on some ARM boards, else what platform knows."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model"):
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str) -> str:
    """The known flags this CPU has ("flags" on x86, "Features" on ARM), space-separated in KNOWN_FLAGS order."""
    present = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            present.update(value.split())
    return " ".join(flag for flag in KNOWN_FLAGS if flag in present)


def version(package: str) -> str:
    for distribution in (package, *ALTERNATIVES.get(package, ())):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def gpu_name() -> str:
    try:
        import torch
    except ImportError:
        return "none"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    mps = getattr(torch.backends, "mps", None)
    return "Apple MPS" if mps is not None and mps.is_available() else "none"


def torch_threads() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.get_num_threads()


def describe(cpuinfo: str | None = None) -> dict:
    """This machine and its libraries, every value a string or an int."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    return {"cpu": cpu_model(cpuinfo), "cpu_flags": cpu_flags(cpuinfo), "cores": os.cpu_count() or 0,
            "threads": torch_threads(), "gpu": gpu_name(), "python": platform.python_version(),
            **{package: version(package) for package in PACKAGES}, "os": platform.platform()}

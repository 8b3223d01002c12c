"""Packaging for tempo_fast: the pure-Python package, its optional extras, and the optional
native extension `tempo_fast._C` built by CMakeLists.txt from kernels/.

Install on a CPU machine (pin torch first: another torch pulls CUDA builds):
    pip install torch==2.13.0 && pip install -e ".[dev]"

The native part (vLLM's pattern: this file drives CMake) is chosen by TEMPO_FAST_NATIVE:
    auto (default)  build what the machine can: the CPU part with the system C++ compiler, the
                    CUDA part too when torch has CUDA and nvcc is found; a failure only warns
                    (the package works without the extension; `python -m tempo_fast._native`
                    says why it is missing)
    1               build it and fail the install if it cannot be built
    0               skip it
TEMPO_FAST_CUDA=0|1|auto does the same for the CUDA part; TORCH_CUDA_ARCH_LIST picks the GPU
architectures (default 9.0a: sm_90a, the H100/H200); MAX_JOBS the parallel compile jobs.
`pip install -v` shows the build's output.

torch is not a build requirement: pip's isolated build environment would install another torch
(gigabytes of CUDA builds), and the extension must match the torch it will run with. The build
asks the target interpreter (sys.executable, outside the isolated paths) where its torch is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

EXTRAS = {
    # test tools (triton runs its kernels on CPU under TRITON_INTERPRET=1; tensorboard for RunConfig.tensorboard)
    "dev": ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6", "numba==0.68.1", "triton>=3.0", "tensorboard"],
    # CPU kernels (numba) for the CPU paths of tempo_fast.ops; triton for the interpreter
    "cpu": ["numba==0.68.1", "triton>=3.0"],
    # video decoding and pictures (torchcodec 0.13.0 is the last CPU-only wheel)
    "video": ["torchcodec==0.13.0", "av", "matplotlib", "tqdm"],
    # models (Qwen2.5-VL / Qwen3-VL through transformers)
    "model": ["transformers==5.23.0", "tokenizers", "safetensors"],
    # reference providers measured side by side in the benchmarks
    "bench": ["liger-kernel", "trl", "cut-cross-entropy", "matplotlib"],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

ROOT = Path(__file__).resolve().parent
MARKER = "_native_build.json"   # next to the extension: what the build did, read by tempo_fast._native
_TORCH_QUERY = ("import json, torch, torch.utils; print(json.dumps(dict(version=torch.__version__, "
                "cmake=torch.utils.cmake_prefix_path, cuda=torch.version.cuda)))")


def _mode(name: str) -> str:
    value = os.environ.get(name, "auto").strip().lower() or "auto"
    if value not in ("0", "1", "auto"):
        raise SystemExit(f"{name} must be 0, 1 or auto, got {value!r}")
    return value


def _torch_info() -> dict:
    """Version, cmake prefix and CUDA version of the torch that the target interpreter imports.

    In pip's isolated build this process does not see the target's packages, so a clean child
    of the same interpreter (without pip's PYTHONPATH overlay) is asked.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    done = subprocess.run([sys.executable, "-c", _TORCH_QUERY], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"torch is not importable by {sys.executable} ({tail}); install torch first "
                           "(pip install torch==2.13.0), then this package")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class NativeBuild(build_ext):
    """Builds tempo_fast._C with CMake; never fails the install in auto mode."""

    def build_extension(self, ext: Extension) -> None:
        mode, cuda_mode = _mode("TEMPO_FAST_NATIVE"), _mode("TEMPO_FAST_CUDA")
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        record = dict(mode=mode, built=False, cuda=False, torch=None, reason="")
        if mode == "0":
            record["reason"] = "the install ran with TEMPO_FAST_NATIVE=0"
        else:
            try:
                record.update(self._build(out, mode, cuda_mode))
            except Exception as err:  # auto: warn and install the pure-Python package
                if mode == "1":
                    raise
                record["reason"] = f"the native build failed: {err}"
                print(f"WARNING: tempo_fast: {record['reason']}\nWARNING: tempo_fast is installed without "
                      "its native extension (backend='native' unavailable); rerun with TEMPO_FAST_NATIVE=1 "
                      "pip install -v -e . to see the error", file=sys.stderr)
        (out.parent / MARKER).write_text(json.dumps(record, indent=1) + "\n")

    def _build(self, out: Path, mode: str, cuda_mode: str) -> dict:
        if shutil.which("cmake") is None:
            raise RuntimeError("cmake is not on the PATH (apt-get install cmake, or pip install cmake)")
        torch = _torch_info()
        nvcc = _nvcc()
        want_cuda = cuda_mode == "1" or (cuda_mode == "auto" and torch["cuda"] is not None)
        if want_cuda and torch["cuda"] is None:
            raise RuntimeError(f"TEMPO_FAST_CUDA=1 but torch {torch['version']} has no CUDA")
        if want_cuda and nvcc is None:
            if cuda_mode == "1" or mode == "1":
                raise RuntimeError(f"torch {torch['version']} has CUDA but nvcc was not found "
                                   "(set CUDA_HOME, or TEMPO_FAST_CUDA=0 for the CPU part only)")
            print("WARNING: tempo_fast: nvcc not found, building the CPU part only", file=sys.stderr)
            want_cuda = False
        try:
            self._cmake(out, torch, nvcc if want_cuda else None)
        except Exception as err:
            if not want_cuda or cuda_mode == "1" or mode == "1":
                raise
            print(f"WARNING: tempo_fast: the CUDA part failed ({err}); building the CPU part only", file=sys.stderr)
            want_cuda = False
            self._cmake(out, torch, None)
        note = "" if want_cuda or torch["cuda"] is None else "the CUDA part was not built (nvcc not found or it failed)"
        return dict(built=True, cuda=want_cuda, torch=torch["version"], reason=note)

    def _cmake(self, out: Path, torch: dict, nvcc: str | None) -> None:
        key = hashlib.sha1(f"{sys.executable}|{torch['version']}|{nvcc}".encode()).hexdigest()[:10]
        build_dir = ROOT / "build" / f"native-{key}"
        build_dir.mkdir(parents=True, exist_ok=True)
        args = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                f"-DTorch_DIR={Path(torch['cmake']) / 'Torch'}", f"-DPython_EXECUTABLE={sys.executable}",
                f"-DTEMPO_FAST_OUTPUT_DIR={out.parent}", f"-DTEMPO_FAST_CUDA={'ON' if nvcc else 'OFF'}"]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"] if not (build_dir / "CMakeCache.txt").exists() else []
        env = dict(os.environ)
        if nvcc:
            # torch's cmake finds the toolkit from its root (FindCUDA), CMake from the compiler
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCUDA_TOOLKIT_ROOT_DIR={Path(nvcc).resolve().parent.parent}"]
            env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        for cmd in (args, ["cmake", "--build", str(build_dir), "-j", jobs]):
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            print(done.stdout, end="")
            print(done.stderr, end="", file=sys.stderr)
            if done.returncode != 0:
                text = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
                lines = [ln for ln in text if "error" in ln.lower()][:3] or text[-2:]
                raise RuntimeError(f"{' '.join(cmd[:2])} failed: " + (" | ".join(lines) or "no output"))
        if not out.exists():
            raise RuntimeError(f"cmake built no {out.name} in {out.parent}")

    def copy_extensions_to_source(self) -> None:
        """Editable installs: copy the module and the build record into the source tree; where the
        native part was not built, remove a stale module there."""
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            for src, dst in ((Path(regular_file), Path(inplace_file)),
                             (Path(regular_file).with_name(MARKER), Path(inplace_file).with_name(MARKER))):
                if src.exists():
                    self.copy_file(str(src), str(dst), level=self.verbose)
                else:
                    dst.unlink(missing_ok=True)

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        return outputs + [str(Path(p).with_name(MARKER)) for p in outputs[:1]]

setup(
    name="tempo_fast",
    version="0.1.0",
    description="Kernels and runtime for temporal video grounding with video-LLMs (Tempo-R0: SAA, ETA, PIR-GRPO)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tempo_fast", "tempo_fast.*"]),
    # the pretrained `tiny` preset's weights and manifest (tempo-fast pretrain --ship)
    package_data={"tempo_fast.model": ["weights/*.safetensors", "weights/*.json"]},
    install_requires=["torch>=2.4", "numpy>=1.24"],
    extras_require=EXTRAS,
    ext_modules=[CMakeExtension("tempo_fast._C")],
    cmdclass={"build_ext": NativeBuild},
    entry_points={"console_scripts": ["tempo-fast=tempo_fast.cli:main"]},
)

"""The native extension tempo_fast._C in this install: it is built and imports (unless the
install ran with TEMPO_FAST_NATIVE=0), its build-description ops answer, and where it is
missing, backend="native" fails with the reason while every other backend keeps working."""
import json
import re

import pytest
import torch

from tempo_fast import _native
from tempo_fast.ops import saa_scores, saa_scores_ref
from tempo_fast.ops._backend import check_native, resolve_backend


def _skip_if_disabled():
    record = _native.build_record()
    if record is not None and record.get("mode") == "0":
        pytest.skip(f"installed with TEMPO_FAST_NATIVE=0: {record.get('reason')}")


@pytest.fixture
def missing(monkeypatch, tmp_path):
    """The extension as if not importable: a module name that does not exist, the record at a
    path of the test's choosing (absent until written), and the cached state cleared around."""
    monkeypatch.setattr(_native, "MODULE", "tempo_fast._no_such_module")
    monkeypatch.setattr(_native, "BUILD_RECORD", tmp_path / "_native_build.json")
    _native._state.cache_clear()
    yield tmp_path / "_native_build.json"
    _native._state.cache_clear()


def test_extension_imports_in_this_install():
    _skip_if_disabled()
    assert _native.available(), _native.reason()
    assert _native.reason() == ""
    assert _native.load().__name__ == "tempo_fast._C"
    record = _native.build_record()
    assert record is not None and record["built"], record


def test_build_description_ops():
    _skip_if_disabled()
    assert torch.ops.tempo_fast.cpu_isa() in ("scalar", "avx2", "avx512bw")
    cuda = torch.ops.tempo_fast.built_with_cuda()
    assert cuda == _native.build_record()["cuda"]
    if torch.version.cuda is None:
        assert not cuda   # a CPU torch cannot link the CUDA part
    assert _native.has_op("saa_abs_diff_sums") and not _native.has_op("no_such_op")
    assert _native.has_kernel("saa_abs_diff_sums", "cpu")
    assert _native.has_kernel("saa_abs_diff_sums", "cuda") == cuda


def test_default_backend_is_native_on_cpu():
    _skip_if_disabled()
    frames = torch.randint(0, 256, (3, 5, 7, 3), dtype=torch.uint8)
    assert resolve_backend("saa_scores", frames, None, native="saa_abs_diff_sums", native_default=("cpu",)) == "native"
    assert resolve_backend("saa_scores", frames, None, native="saa_abs_diff_sums") != "native"


@pytest.mark.parametrize("record,expected", [
    (None, "no build record"),
    (dict(mode="0", built=False, cuda=False, torch=None, reason="the install ran with TEMPO_FAST_NATIVE=0"),
     "was not built: the install ran with TEMPO_FAST_NATIVE=0"),
    (dict(mode="auto", built=False, cuda=False, torch="2.13.0", reason="the native build failed: cmake --build failed"),
     "was not built: the native build failed: cmake --build failed"),
    (dict(mode="auto", built=True, cuda=False, torch="2.13.0", reason=""), r"was built \(torch 2.13.0\) but does not import"),
])
def test_reason_when_missing(missing, record, expected):
    if record is not None:
        missing.write_text(json.dumps(record))
    assert not _native.available()
    assert re.search(expected, _native.reason()), _native.reason()
    with pytest.raises(RuntimeError, match="TEMPO_FAST_NATIVE=1 pip install -v -e"):
        _native.load()
    assert not _native.has_op("saa_abs_diff_sums") and not _native.has_kernel("saa_abs_diff_sums", "cpu")


def test_native_backend_error_and_fallback_when_missing(missing):
    missing.write_text(json.dumps(dict(mode="0", built=False, cuda=False, torch=None,
                                       reason="the install ran with TEMPO_FAST_NATIVE=0")))
    frames = torch.randint(0, 256, (4, 9, 8, 3), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match=r"backend='native' needs the extension tempo_fast._C.*TEMPO_FAST_NATIVE=0"):
        saa_scores(frames, backend="native")
    # backend=None and the other backends do not need it
    expected = saa_scores_ref(frames)
    assert torch.equal(saa_scores(frames), expected)
    assert torch.equal(saa_scores(frames, backend="torch"), expected)


def test_check_native_messages(monkeypatch):
    with pytest.raises(ValueError, match="has no native kernel"):
        check_native("group_advantages", None, "cpu")
    monkeypatch.setattr(_native, "available", lambda: True)
    monkeypatch.setattr(_native, "has_op", lambda name: name == "saa_abs_diff_sums")
    monkeypatch.setattr(_native, "has_kernel", lambda name, device: device == "cpu")
    with pytest.raises(ValueError, match="built without its CUDA part"):
        check_native("saa_scores", "saa_abs_diff_sums", "cuda")
    with pytest.raises(RuntimeError, match="has no op 'other_op'"):
        check_native("x", "other_op", "cpu")
    check_native("saa_scores", "saa_abs_diff_sums", "cpu")


def test_cpu_isa_choice(monkeypatch):
    monkeypatch.delenv("TEMPO_FAST_CPU_ISA", raising=False)
    assert _native.cpu_isa() == -1
    assert _native.cpu_isa("avx2") == 1
    monkeypatch.setenv("TEMPO_FAST_CPU_ISA", "scalar")
    assert _native.cpu_isa() == 0 and _native.cpu_isa("avx512bw") == 2
    monkeypatch.setenv("TEMPO_FAST_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="got 'sse9'"):
        _native.cpu_isa()

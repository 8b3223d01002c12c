// The Python module tempo_fast._C. It holds no functions: loading it runs the static op
// registrations (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) of every source in kernels/cpu
// and kernels/cuda, and Python calls the ops as torch.ops.tempo_fast.<op>(...).
//
// Two ops describe the build itself:
//   cpu_isa() -> str      the widest SIMD level of this CPU that the kernels use
//                         ("avx512bw", "avx2" or "scalar"; see common/cpu_isa.h)
//   built_with_cuda() -> bool   whether kernels/cuda was compiled into this module
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "common/cpu_isa.h"

namespace {

std::string cpu_isa() { return tempo_fast::isa_name(tempo_fast::best_isa()); }

bool built_with_cuda() {
#ifdef TEMPO_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tempo_fast, m) {
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("built_with_cuda() -> bool", &built_with_cuda);
}

static struct PyModuleDef tempo_fast_c_module = {
    PyModuleDef_HEAD_INIT, "_C",
    "tempo_fast native kernels: call them through torch.ops.tempo_fast", -1, nullptr,
    nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&tempo_fast_c_module); }

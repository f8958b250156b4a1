"""A saved LightGBM model that predicts through LightGBM's C API, without ``import lightgbm``.

``import lightgbm`` costs more than the rest of a one-run ``ciml predict``:
its Python package imports pandas, scipy.sparse and narwhals (about 0.7 s
of CPU on a 2-core machine) to accept inputs that ``gbdt`` never gives.
Predicting from a float32 matrix needs only six functions of the shared
library that package ships (``lib_lightgbm``, LightGBM's documented C API,
``c_api.h``), called exactly as ``lightgbm.Booster.predict`` calls them for
a numpy matrix: same data type and layout, same iteration range, same
(empty) parameter string.  So the numbers are LightGBM's own, bit for bit
(``tests/unit/estimators/test_gbdt_capi.py`` compares them).

:func:`load` returns ``None`` wherever this cannot be done the same way
(no library file where the package keeps it, a library without these
functions); the caller then uses the ``lightgbm`` package.  Anything else
a booster does (feature importance, saving) goes to a ``lightgbm.Booster``
made from the same model text on first use.
"""

import ctypes
import importlib.util
import pathlib
import sys
import threading

import numpy as np

#: ``c_api.h``: C_API_DTYPE_FLOAT32, C_API_IS_ROW_MAJOR, C_API_PREDICT_NORMAL,
#: C_API_PREDICT_CONTRIB.
_DTYPE_FLOAT32 = 0
_ROW_MAJOR = 1
_PREDICT_NORMAL = 0
_PREDICT_CONTRIB = 3
#: ``lightgbm.Booster.predict`` of a booster made from a model string: all
#: iterations (its ``best_iteration`` is -1).
_ALL_ITERATIONS = -1

_FUNCTIONS = ("LGBM_BoosterLoadModelFromString", "LGBM_BoosterGetNumClasses",
              "LGBM_BoosterGetNumFeature", "LGBM_BoosterCalcNumPredict",
              "LGBM_BoosterPredictForMat", "LGBM_BoosterFree", "LGBM_GetLastError")

_lib = None
_lib_lock = threading.Lock()


class LightGBMError(Exception):
    """What LightGBM's C API said went wrong."""


def _library_file():
    """Where the installed ``lightgbm`` package keeps its shared library, without importing it."""
    spec = importlib.util.find_spec("lightgbm")
    if spec is None or not spec.submodule_search_locations:
        return None
    if sys.platform == "darwin":
        name = "lib_lightgbm.dylib"
    elif sys.platform == "win32":
        name = "lib_lightgbm.dll"
    else:
        name = "lib_lightgbm.so"
    # The places lightgbm/libpath.py looks, in its order.
    for folder in spec.submodule_search_locations:
        folder = pathlib.Path(folder)
        for candidate in (folder.parent / name, folder / "bin" / name, folder / "lib" / name):
            if candidate.is_file():
                return candidate
    return None


def _library():
    """The C library with the functions used here declared, or ``None``."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = False
            # Already imported: the package's own handle on the library.
            lib = getattr(getattr(sys.modules.get("lightgbm"), "basic", None), "_LIB", None)
            try:
                path = _library_file() if lib is None else None
                if path is not None:
                    lib = ctypes.cdll.LoadLibrary(str(path))
                if lib is not None and all(hasattr(lib, f) for f in _FUNCTIONS):
                    lib.LGBM_GetLastError.restype = ctypes.c_char_p
                    _lib = lib
            except (OSError, ImportError, ValueError):  # no usable library: the package
                pass
        return _lib or None


def _check(lib, status):
    if status != 0:
        raise LightGBMError(lib.LGBM_GetLastError().decode("utf-8", "replace"))


class CBooster:
    """The predicting half of ``lightgbm.Booster``, for a model loaded from its text."""

    def __init__(self, lib, model_str):
        self._lib = lib
        self._model_str = model_str
        self._handle = ctypes.c_void_p()
        self._full = None
        iterations = ctypes.c_int(0)
        _check(lib, lib.LGBM_BoosterLoadModelFromString(
            ctypes.c_char_p(model_str.encode("utf-8")), ctypes.byref(iterations),
            ctypes.byref(self._handle)))
        classes = ctypes.c_int(0)
        _check(lib, lib.LGBM_BoosterGetNumClasses(self._handle, ctypes.byref(classes)))
        features = ctypes.c_int(0)
        _check(lib, lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(features)))
        self.num_class = classes.value
        self.num_feature = features.value

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_BoosterFree(handle)
            self._handle = None

    def predict(self, data, pred_contrib=False):
        """As ``lightgbm.Booster.predict(data, pred_contrib=...)`` for a 2-D numpy matrix."""
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError("Input numpy.ndarray or list must be 2 dimensional")
        if data.dtype != np.float32:
            # lightgbm passes float64 as float64; gbdt only ever gives float32.
            return self._lightgbm().predict(data, pred_contrib=pred_contrib)
        data = np.ascontiguousarray(data)
        nrow, ncol = data.shape
        kind = _PREDICT_CONTRIB if pred_contrib else _PREDICT_NORMAL
        lib = self._lib
        count = ctypes.c_int64(0)
        _check(lib, lib.LGBM_BoosterCalcNumPredict(
            self._handle, ctypes.c_int(nrow), ctypes.c_int(kind), ctypes.c_int(0),
            ctypes.c_int(_ALL_ITERATIONS), ctypes.byref(count)))
        out = np.empty(count.value, dtype=np.float64)
        written = ctypes.c_int64(0)
        _check(lib, lib.LGBM_BoosterPredictForMat(
            self._handle, data.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(_DTYPE_FLOAT32),
            ctypes.c_int32(nrow), ctypes.c_int32(ncol), ctypes.c_int(_ROW_MAJOR),
            ctypes.c_int(kind), ctypes.c_int(0), ctypes.c_int(_ALL_ITERATIONS),
            ctypes.c_char_p(b""), ctypes.byref(written),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if written.value != count.value:
            raise LightGBMError("Wrong length for predict results")
        # lightgbm's shapes: one value per row, else a row per example.
        if out.size != nrow or pred_contrib:
            out = out.reshape(nrow, -1)
        return out

    def _lightgbm(self):
        if self._full is None:
            import lightgbm

            self._full = lightgbm.Booster(model_str=self._model_str)
        return self._full

    def __getattr__(self, name):
        # Everything but predicting (feature_importance, model_to_string, ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._lightgbm(), name)


def load(model_str):
    """A :class:`CBooster` for ``model_str``, or ``None`` where the C API cannot be used.

    Raises :class:`LightGBMError` for text LightGBM does not take as a model.
    """
    lib = _library()
    if lib is None:
        return None
    return CBooster(lib, model_str)

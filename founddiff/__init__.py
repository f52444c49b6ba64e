__version__ = "0.1.0"

# Hand-written below this line (nbdev_export only rewrites the __version__ line above).
# `founddiff.load_model(...)` and friends, imported lazily so that `import founddiff` loads no model code.
_LAZY = {'load_model': 'pipeline', 'save_model': 'pipeline', 'Denoiser': 'pipeline'}

def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

def __dir__(): return sorted(list(globals()) + list(_LAZY))

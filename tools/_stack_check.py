"""Imported first by the command-line tools: an interpreter without localvision's stack (the
system Python instead of the project's virtual environment) gets one line saying what to do,
not ``ModuleNotFoundError: No module named 'mmengine'``.

Only looks the packages up (``importlib.util.find_spec``); importing them is left to the tool.
"""
import importlib.util
import sys

STACK = ('torch', 'torchvision', 'timm', 'mmengine')


def missing_packages(names=STACK):
    """The packages of ``names`` this interpreter cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def require_stack(names=STACK):
    """Exit with one ``error:`` line when a package of ``names`` is missing."""
    missing = missing_packages(names)
    if missing:
        sys.exit(f"error: {sys.executable} has no {', '.join(missing)} (localvision's stack): "
                 'run `source .venv/bin/activate` or `make setup` first (or `pip install -e .` into this '
                 'environment)')


require_stack()

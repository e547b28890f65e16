"""Prints the Python modules among the arguments that this interpreter cannot import; exits 1 if any.

  missing_modules.py MODULE...
"""
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing))
sys.exit(1 if missing else 0)

"""The ``covidcxr`` command line, one module per command group: each command parses its
arguments, calls one library function and prints what it returns. Heavy libraries (numpy,
torch, matplotlib...) are imported inside the commands, so ``covidcxr --help`` answers at once.
"""

from importlib import import_module

from covidcxr.cli.app import app, run

# Importing a group's module registers its commands; `covidcxr --help` lists them in this order.
COMMAND_MODULES = ("train", "analysis", "predict", "serve", "dicom", "models", "data")
for _module in COMMAND_MODULES:
    import_module(f"covidcxr.cli.{_module}")

__all__ = ["app", "run"]

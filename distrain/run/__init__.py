"""distrain-run, the launcher: ``distrain-run -np N PROGRAM`` or, from Python, ``launch(config)``.

Layers, one module each: :mod:`~distrain.run.cli` (flags only) builds a
:class:`~distrain.run.config.LaunchConfig`; :mod:`~distrain.run.launcher` checks it and plans
the run; :mod:`~distrain.run.command` builds the mpirun command from the vendor tables in
:mod:`~distrain.run.vendors`; :mod:`~distrain.run.supervisor` runs and watches it, with
:mod:`~distrain.run.rank` in front of the program on every rank. The manual is
:mod:`distrain.run.cli`'s docstring.

Example:
    >>> from distrain.run import LaunchConfig, launch
    >>> launch(LaunchConfig(["python", "train.py"], np=2))   # doctest: +SKIP
    0
"""
from distrain.run.config import LaunchConfig
from distrain.run.launcher import launch

__all__ = ["LaunchConfig", "launch"]

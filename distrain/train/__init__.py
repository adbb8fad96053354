"""The training program: ``python -m distrain.train``, or ``run(TrainConfig(...))``."""
from distrain.train.config import TrainConfig, config_from_argv

__all__ = ["TrainConfig", "config_from_argv", "run", "main"]


def run(config: TrainConfig):
    """Trains with ``config``; see :func:`distrain.train.runner.run`."""
    from distrain.train.runner import run as _run
    return _run(config)


def main(argv=None) -> int:
    """The command line; see :mod:`distrain.train.cli`."""
    from distrain.train.cli import main as _main
    return _main(argv)

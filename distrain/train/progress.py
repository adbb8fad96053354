"""What the training program prints: rank 0's progress bar and epoch summaries.

Other ranks stay quiet unless ``--verbose``, when their lines carry a ``[rank N]`` tag.
"""
from __future__ import annotations

import sys

__all__ = ["Printer"]


class Printer:
    """Prints for one rank.

    Args:
        rank: this rank.
        verbose: let ranks other than 0 print too.
    """

    def __init__(self, rank: int, verbose: bool, quiet: bool = False):
        self.rank = rank
        self.enabled = (rank == 0 or verbose) and not quiet
        self._bar = None

    def line(self, text: str) -> None:
        """Prints one line (tagged on ranks other than 0)."""
        if self.enabled:
            prefix = "" if self.rank == 0 else f"[rank {self.rank}] "
            print(prefix + text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """Starts a Keras progress bar for one epoch (rank 0 only)."""
        if self.rank != 0 or not self.enabled:
            return
        import keras
        print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self._bar = keras.utils.Progbar(steps, stateful_metrics=["lr"],
                                        verbose=1 if sys.stdout.isatty() else 2)

    def update(self, done: int, loss: float, accuracy: float, lr: float) -> None:
        """Advances the progress bar to ``done`` steps of the epoch."""
        if self._bar is not None:
            self._bar.update(done, [("loss", loss), ("accuracy", accuracy), ("lr", lr)])

    def end_epoch(self, epoch: int, loss: float, accuracy: float, seconds: float,
                  samples: int, size: int) -> None:
        """Prints the epoch's metrics averaged across ranks."""
        self._bar = None
        self.line(f"epoch {epoch + 1}: loss {loss:.4f} - accuracy {accuracy:.4f} "
                  f"(averaged over {size} rank{'s' if size > 1 else ''}) - {seconds:.1f} s - "
                  f"{samples / max(seconds, 1e-9):.0f} samples/s")

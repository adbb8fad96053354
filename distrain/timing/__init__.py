"""Step timing: per-phase clocks on each rank, the cross-rank report, trace and plot."""
from distrain.timing.timer import PHASES, StepTimer

__all__ = ["PHASES", "StepTimer"]

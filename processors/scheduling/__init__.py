"""Resource-constrained project scheduling (RCPSP): CPM, serial SGS + forward-backward
improvement, CP-SAT (plain and warm-started), PSPLIB parser. Pure: no I/O."""
from .cpm import cpm
from .cpsat import anytime, cpsat, lns, refine
from .project import CpmResult, Project, Schedule, is_feasible
from .psplib import parse_sm
from .sgs import fast_schedule, iterated_fbi, lft_schedule

__all__ = [
    "Project",
    "CpmResult",
    "Schedule",
    "cpm",
    "fast_schedule",
    "refine",
    "cpsat",
    "anytime",
    "lns",
    "iterated_fbi",
    "lft_schedule",
    "is_feasible",
    "parse_sm",
]

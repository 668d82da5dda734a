"""processors.scheduling.parse_sm on real PSPLIB text."""
from __future__ import annotations

from pathlib import Path

import pytest

from processors.model import PlanningError
from processors.scheduling import cpm, parse_sm

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "psplib"
if not DATA.exists():
    DATA = Path("/work/shared/data/psplib")
J30 = DATA / "j30" / "j301_1.sm"


@pytest.mark.skipif(not J30.exists(), reason="PSPLIB j30 data not available")
def test_parse_j301_1():
    p = parse_sm(J30.read_text())
    assert p.n == 32                                  # 30 jobs + super source/sink
    assert p.capacities == (12, 13, 4, 12)
    assert p.durations[:6] == (0, 8, 4, 6, 3, 8)
    assert p.durations[-1] == 0 and p.durations[-2] == 2
    assert p.successors[0] == (1, 2, 3)                # job 1 -> jobs 2 3 4
    assert p.successors[1] == (5, 10, 14)              # job 2 -> jobs 6 11 15
    assert p.successors[-1] == ()
    assert p.demands[1] == (4, 0, 0, 0)
    assert p.demands[5] == (0, 0, 0, 8)
    assert cpm(p).makespan == 38                       # the file's MPM-Time


@pytest.mark.skipif(not J30.parent.exists(), reason="PSPLIB j30 data not available")
def test_parse_all_j30_sizes():
    for f in sorted(J30.parent.glob("*.sm"))[:50]:
        p = parse_sm(f.read_text())
        assert p.n == 32 and len(p.capacities) == 4


def test_parse_rejects_garbage():
    with pytest.raises(PlanningError) as ei:
        parse_sm("not a psplib file")
    assert ei.value.reason == "invalid_psplib"


def test_parse_minimal_text():
    text = """\
jobs (incl. supersource/sink ):  3
RESOURCES
  - renewable                 :  1   R
PRECEDENCE RELATIONS:
jobnr.    #modes  #successors   successors
   1        1          1           2
   2        1          1           3
   3        1          0
************************************************************************
REQUESTS/DURATIONS:
jobnr. mode duration  R 1
------------------------------------------------------------------------
  1      1     0       0
  2      1     4       2
  3      1     0       0
************************************************************************
RESOURCEAVAILABILITIES:
  R 1
    3
************************************************************************
"""
    p = parse_sm(text)
    assert p.durations == (0, 4, 0)
    assert p.successors == ((1,), (2,), ())
    assert p.demands == ((0,), (2,), (0,))
    assert p.capacities == (3,)

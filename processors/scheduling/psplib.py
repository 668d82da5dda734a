"""Parser for PSPLIB single-mode RCPSP files (.sm). Pure: text in, Project out."""
from __future__ import annotations

from processors.model import PlanningError

from .project import Project


def _section(lines: list[str], header: str) -> int:
    for i, line in enumerate(lines):
        if line.strip().upper().startswith(header):
            return i
    raise PlanningError("invalid_psplib", f"missing section {header!r}")


def parse_sm(text: str) -> Project:
    """Parse the text of a PSPLIB .sm file (jobs numbered 1..n, incl. super source/sink).

    Activity i of the Project is job i+1 of the file. Only renewable resources are kept.
    """
    lines = text.splitlines()
    njobs = None
    nren = None
    for line in lines:
        low = line.lower()
        if njobs is None and low.startswith("jobs (incl. supersource/sink )"):
            njobs = int(line.split(":")[1].split()[0])
        elif nren is None and "- renewable" in low:
            nren = int(line.split(":")[1].split()[0])
    if njobs is None or nren is None:
        raise PlanningError("invalid_psplib", "missing job count or resource count")

    def rows_after(header: str, skip: int) -> list[list[int]]:
        i = _section(lines, header) + skip
        out = []
        while i < len(lines) and len(out) < njobs:
            line = lines[i].strip()
            i += 1
            if not line or line.startswith("*") or line.startswith("-"):
                if out:
                    break
                continue
            out.append([int(x) for x in line.split()])
        return out

    prec = rows_after("PRECEDENCE RELATIONS", 2)
    req = rows_after("REQUESTS/DURATIONS", 3)
    if len(prec) != njobs or len(req) != njobs:
        raise PlanningError("invalid_psplib", f"expected {njobs} jobs, got {len(prec)} precedence and {len(req)} request rows")

    successors: list[tuple[int, ...]] = [()] * njobs
    for row in prec:
        job, nsucc = row[0], row[2]
        succ = row[3:3 + nsucc]
        if len(succ) != nsucc:
            raise PlanningError("invalid_psplib", f"job {job}: {nsucc} successors announced, {len(succ)} given")
        successors[job - 1] = tuple(s - 1 for s in succ)

    durations = [0] * njobs
    demands: list[tuple[int, ...]] = [()] * njobs
    for row in req:
        job, dur = row[0], row[2]
        durations[job - 1] = dur
        demands[job - 1] = tuple(row[3:3 + nren])

    i = _section(lines, "RESOURCEAVAILABILITIES") + 2
    while i < len(lines) and not lines[i].strip():
        i += 1
    caps = tuple(int(x) for x in lines[i].split()[:nren])
    return Project(tuple(durations), tuple(successors), tuple(demands), caps)

"""Critical path method (ignores resources)."""
from __future__ import annotations

from .project import CpmResult, Project


def cpm(project: Project) -> CpmResult:
    n = project.n
    dur = project.durations
    succ = project.successors
    preds = project.predecessors
    es, lf, makespan = project.times
    ef = [es[j] + dur[j] for j in range(n)]
    ls = [lf[j] - dur[j] for j in range(n)]
    slack = [ls[j] - es[j] for j in range(n)]

    # one chain of zero-slack activities from time 0 to the makespan (lowest index first)
    path: list[int] = []
    if n:
        starts = [j for j in range(n) if slack[j] == 0 and es[j] == 0 and not preds[j]]
        if not starts:
            starts = [j for j in range(n) if slack[j] == 0 and es[j] == 0]
        cur = starts[0] if starts else None
        while cur is not None:
            path.append(cur)
            if ef[cur] == makespan and not any(slack[s] == 0 and es[s] == ef[cur] for s in succ[cur]):
                break
            nxt = [s for s in sorted(succ[cur]) if slack[s] == 0 and es[s] == ef[cur]]
            cur = nxt[0] if nxt else None
    return CpmResult(tuple(es), tuple(ef), tuple(ls), tuple(lf), tuple(slack), tuple(path), makespan)

import pytest

from processors.approval import PlanHistory, apply_decision, approve, decide, new_version, reject
from processors.config import PlanningConfig
from processors.model import ApprovalState, Plan, PlanningError, RiskCategory
from processors.risk import make_risk

CFG = PlanningConfig()
LOW = make_risk(RiskCategory.TECHNICAL, "a", "A", 0.2, 0.3)
HIGH = make_risk(RiskCategory.TIMELINE, "deadline", "Late", 0.9, 0.8)
BASE = Plan(plan_id="plan-1", goal_id="g", version=1, strategy="hierarchical", tasks=(),
            critical_path=(), makespan_hours=10.0, risks=(LOW,))


def test_low_risk_auto_approved_when_enabled():
    assert decide(BASE, CFG) == ApprovalState.AUTO_APPROVED
    p = apply_decision(BASE, CFG)
    assert p.approval == ApprovalState.AUTO_APPROVED and p.version == 2 and "auto" in p.reason


def test_not_auto_approved_when_disabled():
    cfg = PlanningConfig(auto_approve_low_risk_plans=False)
    assert decide(BASE, cfg) == ApprovalState.PENDING
    assert apply_decision(BASE, cfg) is BASE  # no change, no new version


def test_high_risk_and_invalid_plans_stay_pending():
    assert decide(new_version(BASE, reason="r", risks=(HIGH,)), CFG) == ApprovalState.PENDING
    invalid = new_version(BASE, reason="v", violations=("deadline exceeded: ...",))
    assert decide(invalid, CFG) == ApprovalState.PENDING  # never REJECTED automatically


def test_person_decision_stands():
    approved = approve(BASE, "alice")
    assert decide(new_version(approved, reason="progress", risks=(HIGH,)), CFG) == ApprovalState.APPROVED
    rejected = reject(BASE, "bob", "too slow")
    assert decide(rejected, CFG) == ApprovalState.REJECTED


def test_approve_and_reject():
    a = approve(BASE, "alice")
    assert a.approval == ApprovalState.APPROVED and a.version == 2 and a.reason == "approved by alice"
    assert approve(a, "alice") is a
    r = reject(BASE, "bob", "too slow")
    assert r.approval == ApprovalState.REJECTED and r.reason == "rejected by bob: too slow"
    assert reject(r, "bob", "again") is r
    revoked = reject(a, "carol", "changed mind")
    assert revoked.version == 3 and revoked.approval == ApprovalState.REJECTED
    with pytest.raises(PlanningError) as e:
        approve(r, "alice")
    assert e.value.reason == "invalid_transition"
    with pytest.raises(ValueError):
        approve(BASE, "")
    assert BASE.approval == ApprovalState.PENDING and BASE.version == 1  # original untouched


def test_new_version_records_reason_and_keeps_original():
    v2 = new_version(BASE, reason="replanned: task late", makespan_hours=12.0)
    assert v2.version == 2 and v2.reason == "replanned: task late" and v2.makespan_hours == 12.0
    assert BASE.version == 1 and BASE.makespan_hours == 10.0 and BASE.reason == "created"
    assert v2.plan_id == BASE.plan_id
    v3 = new_version(v2, reason="again")
    assert v3.version == 3


def test_structural_change_clears_approval():
    a = approve(BASE, "alice")
    assert new_version(a, reason="progress", risks=(LOW, HIGH)).approval == ApprovalState.APPROVED
    assert new_version(a, reason="replan", makespan_hours=20.0).approval == ApprovalState.PENDING
    kept = new_version(a, reason="replan", makespan_hours=20.0, approval=ApprovalState.APPROVED)
    assert kept.approval == ApprovalState.APPROVED


def test_new_version_guards():
    with pytest.raises(ValueError):
        new_version(BASE, reason="")
    with pytest.raises(ValueError, match="version"):
        new_version(BASE, reason="x", version=7)
    with pytest.raises(ValueError, match="plan_id"):
        new_version(BASE, reason="x", plan_id="other")
    with pytest.raises(ValueError, match="colour"):
        new_version(BASE, reason="x", colour="red")


def test_history():
    h = PlanHistory().append(BASE)
    v2 = approve(BASE, "alice")
    h2 = h.append(v2)
    assert len(h) == 1 and len(h2) == 2 and h2.latest is v2 and h2.get(1) is BASE
    assert h2.reasons() == ((1, "created"), (2, "approved by alice"))
    with pytest.raises(ValueError):
        h2.append(v2)  # same version again
    with pytest.raises(ValueError):
        h2.append(new_version(Plan("other", "g", 2, "x", (), (), 0.0), reason="x"))
    with pytest.raises(KeyError):
        h2.get(9)

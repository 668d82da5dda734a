"""A plan version is Avro-encoded once and spliced into every value that carries it: the
bytes must be exactly what the topic's serde writes for the whole record."""
from processors import lifecycle as L
from processors.config import PlanningConfig
from streams import codec, plan_bytes, state as state_codec
from streams.app import Publisher
from topics import registry as T
from topics.serde import serde

T0 = 1_700_000_000_000


def _state():
    rec = {"goal_id": "g-bytes", "title": "t", "created_at_ms": T0,
           "tasks": [{"task_id": "a", "name": "a", "duration_hours": 2.0},
                     {"task_id": "b", "name": "b", "duration_hours": 3.0, "depends_on": ["a"]}]}
    goal = codec.goal_from_record(serde(T.GOALS_CREATED.name).decode(serde(T.GOALS_CREATED.name).encode(rec)))
    return L.on_goal(None, goal, {}, PlanningConfig(refine_budget_seconds=0), received_at_ms=T0)


def test_created_and_updated_values_are_the_serdes_bytes():
    state, events = _state()
    created = [o for o in codec.records(events) if o.topic == T.PLANS_CREATED.name]
    assert Publisher.encode(created)[0][2] == serde(T.PLANS_CREATED.name).encode(created[0].value)
    update = codec.records([L.PlanUpdated(state.plan, state.plan, L.Figures(12.5, -0.25, 0.9, 1.1), "ACTIVE",
                                          "progress")])
    got = Publisher.encode(update)[0][2]
    assert got == serde(T.PLANS_UPDATED.name).encode(update[0].value)
    assert serde(T.PLANS_UPDATED.name).decode(got) == serde(T.PLANS_UPDATED.name).decode(
        serde(T.PLANS_UPDATED.name).encode(update[0].value))


def test_the_state_stores_the_same_plan_body():
    state, _ = _state()
    data = state_codec.encode(state)
    state_codec.forget()
    assert state_codec.decode(data) == state
    assert plan_bytes.created(state.plan) == serde(T.PLANS_CREATED.name).encode(codec.plan_record(state.plan))

"""`chimera stop|resume|cancel`: arguments are checked before anything is sent."""
from typer.testing import CliRunner

from streams import cli, codec
from topics import registry as T
from topics.serde import serde

runner = CliRunner()


def test_stop_and_resume_need_one_plan_or_all_and_cancel_one_plan():
    assert runner.invoke(cli.app, ["stop"]).exit_code == 2
    assert runner.invoke(cli.app, ["resume", "p1", "--all"]).exit_code == 2
    assert runner.invoke(cli.app, ["cancel"]).exit_code == 2


def test_control_records_are_keyed_by_plan_or_all_and_encode():
    one = codec.control_record("STOP", "p1", by="me", at_ms=1)
    every = codec.control_record("RESUME", None, at_ms=2)
    assert (one.topic, one.key, every.key) == (T.CONTROL_COMMANDS.name, "p1", T.ALL_PLANS)
    for o in (one, every):
        assert serde(o.topic).decode(serde(o.topic).encode(o.value)) == o.value
    assert codec.control_from_record(every.value).plan_id == T.ALL_PLANS

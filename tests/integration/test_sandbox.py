"""The wasmtime sandbox on real modules built from source (tests/wasm/, executor/modules/).

Every hostile module is stopped with its own reason, and the same sandbox runs a good task
right after it. Needs the WASI toolchain (`make modules`)."""
from __future__ import annotations

import json
import threading

import pytest

from executor.build import build, toolchain_missing
from executor.sandbox import Limits, Sandbox
from executor.tasks import REGISTRY, module_for
from processors.execution import task_ref

pytestmark = pytest.mark.skipif(toolchain_missing() is not None and not __import__("os").environ.get("CI"),
                                reason=f"WASI toolchain: {toolchain_missing()} (run `make modules`)")

SMALL = Limits(fuel=2_000_000_000, memory_bytes=32 << 20, timeout_s=10.0, output_bytes=256 << 10)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(root / "work", cache_dir=root / "cwasm")
    yield sb
    sb.close()


def _still_works(sb: Sandbox) -> None:
    out = sb.run(REGISTRY["test-run"].wasm(), ["cases.txt"], _cases(sb), limits=SMALL)
    assert out.ok, (out.reason, out.detail)
    assert json.loads(out.last_line()) == {"passed": 2, "failed": 0}


def _cases(sb: Sandbox):
    wd = sb.workdir(f"cases-{threading.get_ident()}-{id(object())}")
    (wd / "cases.txt").write_text("add 2 3 5\nfib 10 0 55\n")
    return wd


def test_infinite_loop_runs_out_of_fuel(sandbox):
    out = sandbox.run(build("tests/wasm/loop.wat"), [], sandbox.workdir("loop-fuel"),
                      limits=Limits(fuel=50_000_000, timeout_s=60))
    assert (out.ok, out.reason) == (False, "out_of_fuel")
    assert out.fuel_used == 50_000_000
    _still_works(sandbox)


def test_infinite_loop_hits_the_wall_time_deadline(sandbox):
    out = sandbox.run(build("tests/wasm/loop.wat"), [], sandbox.workdir("loop-time"),
                      limits=Limits(fuel=10**15, timeout_s=0.3))
    assert (out.ok, out.reason) == (False, "timeout")
    assert out.wall_s >= 0.3
    _still_works(sandbox)


def test_memory_bomb_is_out_of_memory_within_the_limit(sandbox):
    out = sandbox.run(build("tests/wasm/membomb.c"), [], sandbox.workdir("membomb"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "out_of_memory"), out.detail
    assert out.memory_bytes <= SMALL.memory_bytes
    assert "malloc failed" in out.stderr.read_text()
    _still_works(sandbox)


def test_module_whose_initial_memory_exceeds_the_limit(sandbox, tmp_path):
    import wasmtime
    big = wasmtime.wat2wasm('(module (memory (export "memory") 1024) (func (export "_start")))')  # 64 MiB
    out = sandbox.run(big, [], sandbox.workdir("bigmem"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "out_of_memory"), out.detail


def test_recursion_bomb_traps(sandbox):
    out = sandbox.run(build("tests/wasm/recursion.c"), [], sandbox.workdir("recursion"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "trap"), out.detail
    _still_works(sandbox)


def test_native_stack_recursion_is_a_stack_overflow(sandbox):
    import wasmtime
    wasm = wasmtime.wat2wasm('(module (func $f (call $f)) (func (export "_start") (call $f)))')
    out = sandbox.run(wasm, [], sandbox.workdir("recursion-native"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "trap")
    assert "stack overflow" in out.detail


def test_files_outside_the_task_folder_cannot_be_opened(sandbox):
    wd = sandbox.workdir("escape")
    (sandbox.work_root / "secret.txt").write_text("TOPSECRET\n")
    (wd / "mine.txt").write_text("my own input\n")
    out = sandbox.run(build("tests/wasm/escape.c"), [str(sandbox.work_root / "secret.txt")], wd, limits=SMALL)
    text = out.stdout.read_text()
    assert "TOPSECRET" not in text and "root:" not in text
    assert "OPENED" not in text, text
    assert text.count("DENIED") == 6
    assert out.ok, (out.reason, out.detail)
    # the folder itself is visible, as `/`
    out = sandbox.run(build("tests/wasm/escape.c"), ["/mine.txt"], wd, limits=SMALL)
    assert (out.reason, out.exit_code) == ("exit_status", 9)
    assert "OPENED /mine.txt my own input" in out.stdout.read_text()


def test_unknown_host_function_is_refused(sandbox):
    out = sandbox.run(build("tests/wasm/unknown_import.wat"), [], sandbox.workdir("import"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "unknown_import")
    assert "launch_missiles" in out.detail
    _still_works(sandbox)


def test_ten_megabytes_of_output_is_cut_at_the_cap(sandbox):
    out = sandbox.run(build("tests/wasm/spew.c"), [], sandbox.workdir("spew"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "output_limit")
    assert out.stdout.stat().st_size == SMALL.output_bytes
    assert out.stderr.read_text() == "spewing\n"
    _still_works(sandbox)


def test_missing_and_invalid_modules(sandbox, tmp_path):
    out = sandbox.run(tmp_path / "nope.wasm", [], sandbox.workdir("missing"), limits=SMALL)
    assert out.reason == "module_not_found"
    out = sandbox.run(b"\0asm garbage", [], sandbox.workdir("garbage"), limits=SMALL)
    assert out.reason == "bad_payload"
    out = sandbox.run(REGISTRY["noop"].wasm(), ["ok", 3], sandbox.workdir("badargs"), limits=SMALL)
    assert out.reason == "bad_payload"


def test_cancel_stops_a_running_task(sandbox):
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    out = sandbox.run(build("tests/wasm/loop.wat"), [], sandbox.workdir("cancel"),
                      limits=Limits(fuel=10**15, timeout_s=30), cancel=cancel)
    assert (out.ok, out.reason) == (False, "cancelled")


def test_wasm_runs_without_holding_the_gil(sandbox):
    """A Python thread keeps running while a module loops in another thread (ctypes releases
    the GIL): slots can be threads."""
    counted = [0]
    done = threading.Event()

    def spin():
        while not done.is_set():
            counted[0] += 1

    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", sandbox.run(
        build("tests/wasm/loop.wat"), [], sandbox.workdir("gil"), limits=Limits(fuel=10**15, timeout_s=0.5))))
    worker.start()
    import time
    time.sleep(0.1)             # the module is running now
    before = counted[0]
    spinner = threading.Thread(target=spin)
    spinner.start()
    worker.join()
    done.set()
    spinner.join()
    assert result["out"].reason == "timeout"
    assert counted[0] - before > 10_000


def test_compiled_once_and_cached_on_disk(tmp_path):
    a = Sandbox(tmp_path / "w1", cache_dir=tmp_path / "cwasm")
    try:
        wasm = REGISTRY["compute"].wasm()
        first = a.load(wasm)
        assert a.load(wasm) is first and a.compiled == 1
        assert len(list((tmp_path / "cwasm").glob("*.cwasm"))) == 1
    finally:
        a.close()
    b = Sandbox(tmp_path / "w2", cache_dir=tmp_path / "cwasm")
    try:
        b.load(wasm)
        assert b.compiled == 0          # precompiled code from the disk cache
        out = b.run(wasm, ["100000", "2"], b.workdir("c"), limits=SMALL)
        assert out.ok and json.loads(out.last_line())["primes"] == 9592
    finally:
        b.close()


def _assignment(task_id: str, *, name: str, phase: str = "", description: str = "", capabilities=()):
    return {"plan_id": "plan-x", "attempt": 1, "assigned_to": None,
            "task": {"task_id": task_id, "name": name, "phase": phase, "description": description,
                     "capabilities": list(capabilities), "success_criteria": ["it works"]}}


def test_the_built_in_modules_do_real_work(sandbox):
    ran = {}
    for aid, name, phase in (("t1", "Validate the input data", "data"), ("t2", "Implement the service", "build"),
                             ("t3", "Run the test suite", "test"), ("t4", "Crunch", "compute")):
        ref = task_ref(_assignment(aid, name=name, phase=phase))
        plugin = module_for(ref)
        wd = sandbox.workdir(f"builtin-{aid}")
        progress = []
        out = sandbox.run(plugin.wasm(), plugin.prepare(ref, wd), wd, limits=SMALL, on_progress=progress.append)
        assert out.ok, (plugin.name, out.reason, out.detail, out.stderr.read_text())
        assert progress and progress == sorted(progress) and progress[-1] == 100
        ran[plugin.name] = (json.loads(out.last_line()), wd)
    assert set(ran) == {"data-check", "build-step", "test-run", "compute"}
    assert ran["data-check"][0] == {"rows": 200, "errors": 0}
    assert ran["test-run"][0] == {"passed": 5, "failed": 0}
    art = ran["build-step"][1] / "artefact.bin"
    assert art.exists() and b"Implement the service" in art.read_bytes()
    assert ran["build-step"][0]["inputs"] == 2


def test_data_check_reports_rows_and_errors(sandbox):
    wd = sandbox.workdir("bad-csv")
    (wd / "in.csv").write_text("id,amount_num\n1,2.5\n2,abc\n3\n4,\n5,7\n")
    ref = task_ref(_assignment("t9", name="x", description="wasm: data-check in.csv"))
    assert (ref.module, ref.args) == ("data-check", ("in.csv",))
    out = sandbox.run(module_for(ref).wasm(), list(ref.args), wd, limits=SMALL)
    assert (out.reason, out.exit_code) == ("exit_status", 2)
    assert json.loads(out.last_line()) == {"rows": 5, "errors": 3}


def test_test_run_counts_failures(sandbox):
    wd = sandbox.workdir("failing-tests")
    (wd / "cases.txt").write_text("add 1 1 2\nmul 2 2 5\nfib 7 0 13\npow 2 10 1000\n")
    out = sandbox.run(REGISTRY["test-run"].wasm(), ["cases.txt"], wd, limits=SMALL)
    assert (out.reason, out.exit_code) == ("exit_status", 1)
    assert json.loads(out.last_line()) == {"passed": 2, "failed": 2}



def test_traps_still_work_after_chdb_installed_its_signal_handlers(sandbox, tmp_path):
    """chdb (ClickHouse in process) installs SIGILL/SIGSEGV handlers; a sandbox in the same
    process (the test suite; a sink and an executor together) must still see a trap as a trap,
    not die of SIGILL (it did, once wasm traps were signal based)."""
    import clickhouse_connect
    import wasmtime
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}")
    try:
        assert client.query("SELECT 1").result_rows == [(1,)]
    finally:  # chdb opens one engine path per process: later tests open their own folders
        client.close()
    out = sandbox.run(build("tests/wasm/recursion.c"), [], sandbox.workdir("trap-after-chdb"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "trap"), out.detail
    oob = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start") '
                            '(drop (i32.load (i32.const 999999)))))')
    out = sandbox.run(oob, [], sandbox.workdir("oob-after-chdb"), limits=SMALL)
    assert (out.ok, out.reason) == (False, "trap"), out.detail
    _still_works(sandbox)

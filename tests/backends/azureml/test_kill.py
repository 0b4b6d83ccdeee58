"""kill -9 of ``himl apply`` in the middle of submitting 20 runs to Azure ML, then apply again.

The apply runs in a child process (the real operations layer and azure-ai-ml, against the
loopback workspace of this process), which the server slows on every job PUT so that the kill
lands mid-submission, with jobs created, one perhaps in flight, and others not yet sent. The
second apply, in-process, must finish the work: every run exists exactly once, with its own
spec hash, no duplicate, nothing lost; once the jobs complete, the plan has nothing to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from server import FakeWorkspace, backend_of
from test_e2e import commit, finish_all, init_repo, kinds, plan_of, write_manifest

from himl_manifest.model import ActionKind
from himl_manifest.operations.apply import apply

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
PUT_DELAY_S = 0.4

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, sys.argv[1])
    from server import backend_of

    from himl_manifest.operations.apply import apply
    from himl_manifest.operations.plan import make_plan

    repo = Path(sys.argv[2])
    workspace = SimpleNamespace(url=sys.argv[3], cert_file=Path(sys.argv[4]))
    backend = backend_of(workspace, repo)
    plan = make_plan([repo / "experiments"], backend)
    print("planned", len(plan.actions), flush=True)
    apply(plan, backend, root=repo)
    print("applied", flush=True)
    """
)


def test_kill_9_mid_submission_then_apply_again(tmp_path: Path, workspace: FakeWorkspace) -> None:
    repo = init_repo(tmp_path / "repo")
    azure = backend_of(workspace, repo)  # writes environment.yml
    for name in ("alpha", "beta", "gamma", "delta"):
        write_manifest(repo, name, seeds=[0, 1, 2, 3, 4])
    commit(repo, "four experiments, five seeds each")
    desired = {a.run_name: a.run for a in plan_of(repo, azure).actions if a.run is not None}
    assert len(desired) == 20

    # every job PUT takes PUT_DELAY_S, then takes effect (the reply may find its client dead)
    workspace.fail("PUT", r"/jobs/[^/]+$", delay_s=PUT_DELAY_S, after=True, times=10_000)
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    child = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(HERE),
            str(repo),
            workspace.url,
            str(workspace.cert_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workspace.created) < 7:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child submitted nothing in time"
            time.sleep(0.02)
        time.sleep(PUT_DELAY_S / 2)  # the next PUT is in flight
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    time.sleep(2 * PUT_DELAY_S)  # a request in flight at the kill takes effect (or not)
    puts = workspace.calls("PUT", r"/jobs/[^/]+$")
    done_before = len(workspace.created)
    assert 7 <= done_before < 20, "the kill did not land mid-submission"
    assert len(puts) in (done_before, done_before + 1)

    # apply again, in-process: what exists is waited for, the rest is created; no duplicate
    workspace.faults.clear()
    plan = plan_of(repo, azure)
    assert Counter(str(a.kind) for a in plan.actions) == {
        "wait": done_before,
        "create": 20 - done_before,
    }
    result = apply(plan, azure, root=repo)
    assert result.ok and result.count(ActionKind.CREATE) == 20 - done_before
    assert len(workspace.created) == len(set(workspace.created)) == 20
    assert set(workspace.jobs) == set(desired)
    for name, job in workspace.jobs.items():
        run = desired[name]
        assert run is not None
        properties = job["properties"]["properties"]
        assert properties["himl.spec_hash"] == run.spec_hash
        assert properties["himl.run_name"] == name
        assert properties["himl.attempt"] == "1"
        assert job["properties"]["tags"]["himl.state"] == "active"

    # once they completed: no changes
    finish_all(workspace)
    again = plan_of(repo, azure)
    assert {kind for kind, _ in kinds(again)} == {"keep"}
    assert len(again.actions) == 20
    assert apply(again, azure, root=repo).summary_line() == "No changes."
    assert len(workspace.created) == 20

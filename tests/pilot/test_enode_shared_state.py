"""`enova enode run` in the shared state directory: what it refuses to take over, and what a killed
enode left that the next one adopts."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from enova.apply.enode import ENODE_SOURCE, _check_shared_state, build_specs
from enova.errors import UsageError
from enova.observe.state import DeploymentRecord, GatewayRecord, StateStore


def deployment(store: StateStore, name: str, source: str) -> None:
    store.write_deployment(DeploymentRecord(name=name, replicas=1, config_hash="x", config={},
                                            applied_at=time.time(), source=source))


@pytest.fixture
def live_gateway(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    store = StateStore(tmp_path / "state")
    store.write_gateway(GatewayRecord(pid=proc.pid, create_time=psutil.Process(proc.pid).create_time(),
                                      config_hash="x", config={"host": "127.0.0.1", "port": 9199}, argv=[], log=""))
    yield store
    proc.kill()
    proc.wait()


def test_a_deployment_of_that_name_started_by_apply_is_refused_naming_who_started_it(tmp_path):
    store = StateStore(tmp_path / "state")
    deployment(store, "smol", "/srv/specs/smol.yaml:4")
    with pytest.raises(UsageError) as err:
        _check_shared_state(store, "smol")
    assert err.value.exit_code == 2
    assert "started by the specs at /srv/specs/smol.yaml:4" in str(err.value)
    assert "`enova delete smol`" in str(err.value) and "--name" in str(err.value)


def test_what_a_killed_enode_left_is_adopted(tmp_path, live_gateway):
    specs = build_specs(model="builtin:smollm2-135m-instruct", name="smol", replicas=1, cpus=1, gpus=0,
                        engine_args={}, host="127.0.0.1", port=9199, token_file=None)
    located = specs.deployments["smol"]
    deployment(live_gateway, "smol", f"{located.file}:{located.line}")
    assert str(located.file).endswith(ENODE_SOURCE)
    _check_shared_state(live_gateway, "smol")  # no error: its own leftovers


def test_a_live_gateway_serving_deployments_enode_does_not_own_is_refused(tmp_path, live_gateway):
    deployment(live_gateway, "other", "/srv/specs/other.yaml:1")
    with pytest.raises(UsageError, match=r"serves other, which enode does not own"):
        _check_shared_state(live_gateway, "smol")


def test_other_deployments_without_a_live_gateway_are_left_alone(tmp_path):
    store = StateStore(tmp_path / "state")
    deployment(store, "other", "/srv/specs/other.yaml:1")
    _check_shared_state(store, "smol")

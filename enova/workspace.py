"""The operations every front end shares: load specs (checked like `enova validate`), observe the
world through the runtimes, and compute the plan `enova diff` shows.

The CLI, the application server and pilot all call these, so a plan shown in a browser is the
plan `enova diff` prints. Nothing here keeps state between calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enova.errors import EnovaError
from enova.settings import Settings


@dataclass(frozen=True)
class Workspace:
    settings: Settings
    progress: Callable[[str], None] = lambda message: None

    def load(self, path: Path):
        """The spec set at `path`, validated, with engine args checked by vLLM's own parser."""
        from enova.engines.argspec import validate_engine_args
        from enova.spec.loader import load_specs
        specs = load_specs(path)
        validate_engine_args(specs, self.settings.cache_dir)
        return specs

    def store(self):
        from enova.observe.state import StateStore
        return StateStore(self.settings.state_dir)

    def runtime(self, store, specs=None):
        """Every runtime behind one (enova.runtime.select); `specs` names the Docker engines to
        look for enova's containers on."""
        from enova.runtime.select import Runtimes, spec_docker_hosts
        return Runtimes(store, progress=self.progress, docker_hosts=lambda: spec_docker_hosts(specs))

    def observe(self, specs=None):
        """(store, runtime, world) as of now."""
        from enova.runtime.world import observe
        store = self.store()
        runtime = self.runtime(store, specs)
        return store, runtime, observe(store, runtime, now=time.time())

    def facts(self, specs):
        """What engine.args auto is planned against: this host's GPUs and memory, the models'
        geometry (None when no deployment asks for auto: nothing to observe)."""
        if not any(located.doc.spec.engine.auto for located in specs.deployments.values()):
            return None
        from enova.apply.facts import gather_facts
        return gather_facts(specs, cache_dir=self.settings.cache_dir)

    def plan(self, specs, world, prune: bool = False):
        """The plan; a deployment with `scaling` is planned at the autoscaler's persisted count."""
        from enova.observe.scaler import ScalerStore
        from enova.plan.desired import desired_gateway, desired_state
        from enova.plan.diff import compute_plan
        scaled = ScalerStore(self.settings.state_dir).targets()
        return compute_plan(desired_state(specs, scaled, facts=self.facts(specs)), world.deployments, prune=prune,
                            gateway=desired_gateway(specs), observed_gateway=world.gateway)

    def refresh_targets(self) -> None:
        """Rewrite the monitoring scrape targets from the records (Prometheus follows on its own)."""
        from enova.monitor.targets import refresh_targets
        refresh_targets(self.settings.state_dir)

    def rotate_logs(self, store) -> None:
        """Replica and gateway logs are rotated by copy-and-truncate (enova.observe.logs); a failure
        is reported, never fatal."""
        from enova.observe.logs import rotate_logs
        try:
            rotate_logs(store.root / "logs")
        except (OSError, EnovaError) as exc:
            self.progress(f"log rotation: {exc}")


def revision(specs: Path) -> str:
    """The specs' git revision ("abc1234", "+dirty" when edited), which replicas are labelled with."""
    from enova.reconcile.gitsource import git_info
    try:
        info = git_info(specs)
    except EnovaError:
        return ""
    return info.short() if info else ""

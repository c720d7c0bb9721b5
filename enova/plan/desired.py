"""Desired state from a validated spec set: one DesiredDeployment per Deployment document,
computed once over the whole set (which deployment is the default is a property of the set).

The replica config holds exactly the fields that plan.fields marks REPLACE, so its hash
changes if and only if the replicas must be replaced; `serving` and `settings` hold the
UPDATE fields, written to the deployment record in place. Pure; called by the CLI, enode and
the reconciler before plan.diff.compute_plan.

Who owns the replica count: without `scaling`, spec.replicas. With `scaling`, the autoscaler:
its persisted target (enova.observe.scaler.ScalerStore.targets(), passed in as `scaled`)
clamped to [min, max], so an edit of min or max takes effect at once; before the autoscaler
has decided anything, spec.replicas clamped the same way. Removing `scaling` hands the count
back to spec.replicas (a leftover target is ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from enova.spec.loader import SpecSet
from enova.spec.models import DeploymentSpec, GatewaySpec

from .auto import PlanFacts, resolve_auto
from .fields import Effect, project
from .model import DesiredDeployment, DesiredGateway


OPTIONAL_REPLACE = ("image", "docker")  # left out of the config while unset (runtime local)


def replica_config(spec: DeploymentSpec) -> dict[str, Any]:
    """The fields a replica process is started from (plan.fields REPLACE), in a canonical shape.
    The container-only fields are left out while unset, so adding them to the table changed no
    local replica's hash."""
    config = project(spec.model_dump(mode="json"), Effect.REPLACE)
    for key in OPTIONAL_REPLACE:
        if config.get(key) is None:
            config.pop(key, None)
    return config


def in_place(spec: DeploymentSpec, is_default: bool) -> dict[str, Any]:
    """The in-place fields (plan.fields UPDATE): {"serving": {...}, "settings": {...}}, with the
    effective default decided over the spec set."""
    out = project(spec.model_dump(mode="json"), Effect.UPDATE)
    out["serving"]["default"] = is_default
    if out["serving"].get("hold_timeout") is None:
        out["serving"].pop("hold_timeout", None)    # unset: records written before the field stay equal
    if spec.scaling is not None and spec.scaling.min == 0:
        # the gateway holds requests for a deployment at zero replicas instead of a 503 at once
        out["serving"]["scale_from_zero"] = True
    return out


def replica_count(spec: DeploymentSpec, scaled: int | None) -> tuple[int, str, str]:
    """The desired replica count of one deployment, who owns it ("spec" or "autoscaler") and,
    for the autoscaler, how it was reached (for plan reasons). `scaled`: the autoscaler's
    persisted target, None when it has decided nothing yet."""
    scaling = spec.scaling
    if scaling is None:
        return spec.replicas, "spec", ""
    if scaled is None:
        start, source = spec.replicas, f"spec.replicas {spec.replicas} until the autoscaler decides"
    else:
        start, source = scaled, f"the autoscaler's target {scaled}"
    count = min(max(start, scaling.min), scaling.max)
    if count > start:
        source += f", raised to min {scaling.min}"
    elif count < start:
        source += f", lowered to max {scaling.max}"
    return count, "autoscaler", source


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a replica config (12 hex digits of sha256 over canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def desired_state(specs: SpecSet, scaled: Mapping[str, int] | None = None,
                  facts: PlanFacts | None = None) -> dict[str, DesiredDeployment]:
    """Map deployment name -> DesiredDeployment, sorted by name. `scaled`: deployment name ->
    the autoscaler's persisted target (ScalerStore.targets()); read only for deployments whose
    spec sets `scaling`. `facts`: the observed inventory and model geometries that
    `engine.args: auto` is resolved against (plan.auto); without them such a deployment is
    blocked."""
    out: dict[str, DesiredDeployment] = {}
    default = specs.default_deployment
    scaled = scaled or {}
    for name in sorted(specs.deployments):
        located = specs.deployments[name]
        base_dir = os.path.dirname(os.path.realpath(str(located.file)))
        resolved = resolve_auto(located.doc.spec, base_dir, facts)
        config = replica_config(located.doc.spec)
        config["engine"]["args"] = resolved.args
        updates = in_place(located.doc.spec, name == default)
        replicas, owner, why = replica_count(located.doc.spec, scaled.get(name))
        out[name] = DesiredDeployment(
            name=name,
            replicas=replicas,
            replicas_from=owner,
            replicas_why=why,
            config=config,
            config_hash=config_hash(config),
            source=f"{located.file}:{located.line}",
            serving=updates["serving"],
            settings=updates["settings"],
            base_dir=base_dir,
            auto=resolved.recommendation,
            auto_chosen=resolved.chosen,
            blocked=resolved.blocked,
        )
    return out


def desired_gateway(specs: SpecSet) -> DesiredGateway | None:
    """The gateway's config from the Gateway document (or the defaults); None when disabled.
    A relative token_file is resolved against the spec file's folder (path arithmetic only)."""
    located = specs.gateway
    spec = located.doc.spec if located else GatewaySpec()
    if not spec.enabled:
        return None
    token_file = spec.token_file
    if token_file and located is not None:
        token_file = os.path.normpath(os.path.join(os.path.dirname(located.file), os.path.expanduser(token_file)))
    config = {
        "host": spec.host, "port": spec.port, "token_file": token_file,
        "max_body_bytes": spec.max_body_bytes, "queue_size": spec.queue_size, "queue_timeout": spec.queue_timeout,
    }
    # tracing keys only when set, so the hash of a spec without them is what it was before they existed
    if spec.otlp_endpoint is not None:
        config["otlp_endpoint"] = spec.otlp_endpoint
    if spec.service_name != GatewaySpec.model_fields["service_name"].default:
        config["service_name"] = spec.service_name
    return DesiredGateway(config=config, config_hash=config_hash(config))


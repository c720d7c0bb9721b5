"""The runtime seam: where replicas run. One interface (`base.Runtime`) through which apply,
observation, the reconciler and status reach replicas; `local` runs them as processes on
this host, `memory` is an in-memory world for fast tests of the decision logic. A container
runtime (Docker) and a cluster runtime (Kubernetes) implement the same interface."""

from .base import Endpoint, Liveness, ReplicaStartError, Runtime, StartRequest

__all__ = ["Endpoint", "Liveness", "ReplicaStartError", "Runtime", "StartRequest"]

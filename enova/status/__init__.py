"""The view of what enova runs, as `enova status` prints it and the application server and
`pilot` serve it: deployments with sync and health status, the reconciler's conditions,
replicas, the gateway and GPUs. `build_status` gathers it (blocking for health probes);
`StatusView.to_dict` is the JSON twin; `render_text` the terminal table."""

from .view import StatusView, build_status, render_text

__all__ = ["StatusView", "build_status", "render_text"]

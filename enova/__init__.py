"""enova: a declarative control plane for serving large language models.

Specs (YAML kept in git) describe deployments, SLOs and load profiles; enova plans
the changes between those specs and what runs, and applies them.
"""

__version__ = "0.1.0"

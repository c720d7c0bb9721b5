"""The JSON Schema of a spec document, for editors and `enova schema`.

Generated from the pydantic models, so it cannot drift from what the loader accepts; the models
restate their cross-field rules (an SLO needs an objective, gamma needs burstiness) as JSON
Schema for editors. Checks that span documents (references, duplicate names) are only in the
loader. Editors pick it up through yaml-language-server:
`# yaml-language-server: $schema=https://enova.dev/schema/v1.json` at the top of a spec file.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from enova.spec.models import Document

SCHEMA_ID = "https://enova.dev/schema/v1.json"


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) that one document (any kind in DOCUMENT_KINDS) must match."""
    schema = TypeAdapter(Document).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "enova spec document (enova/v1)",
        "description": "One enova document: a Deployment, an SLO, a LoadProfile, a Gateway or a Monitoring, chosen by kind.",
        **schema,
    }

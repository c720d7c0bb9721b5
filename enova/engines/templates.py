"""Finding and rendering enova's Jinja templates.

In a wheel the templates live in `enova/templates/`; in a source checkout, in the
repository's top-level `templates/`. Rendering is strict: an undefined variable is an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

_PACKAGE = Path(__file__).resolve().parent.parent


def templates_dir() -> Path:
    for candidate in (_PACKAGE / "templates", _PACKAGE.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"enova's templates are missing (looked in {_PACKAGE / 'templates'} "
                            f"and {_PACKAGE.parent / 'templates'}); reinstall enova")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)


def render_yaml(name: str, **context: Any) -> Any:
    """Render a template whose output is YAML, and parse it."""
    return yaml.safe_load(render(name, **context))


def load_yaml(name: str) -> Any:
    return yaml.safe_load((templates_dir() / name).read_text())

"""Command groups of the `enova` CLI, one module each; `enova.cli` registers them. Shared option
types, the settings and the error handler are in `common`."""

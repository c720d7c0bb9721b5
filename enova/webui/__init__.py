"""The chat web UI (`enova webui run`, 127.0.0.1:8501): one page against the gateway."""

"""The long-running reconcile loop: watch the specs, converge, report status and health to systemd."""

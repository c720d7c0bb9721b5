"""The application server (`enova app run`, 127.0.0.1:8182): a REST API over what the state
directory, the event log, the autoscaler and Prometheus know, and the seed's /instance page.
It reads the same state the reconciler writes and keeps no copy of its own."""

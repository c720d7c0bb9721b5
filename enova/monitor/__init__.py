"""Monitoring: Prometheus that scrapes the gateway and every replica, its configuration, its
scrape targets and rules. `enova mon` (enova.cli) drives it; apply and the reconciler refresh
its targets as replicas come and go.
"""

"""Autoscaling: signals in a bounded window, pure policies that turn (window, capacity, state,
now) into a decision with its reason and numbers, and the loop in the reconciler that acts on
decisions through the ordinary plan and apply path."""

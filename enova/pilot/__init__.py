"""`enova pilot run`: write the specs for a model and start everything for it in the shared
state directory; Ctrl-C (or `enova pilot stop`) stops everything it started."""

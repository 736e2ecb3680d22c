"""Desired traffic to router objects: the built-in router's configuration (in the model's
status) and Gateway API HTTPRoutes. Builders are pure; `apply` adapters do the I/O."""

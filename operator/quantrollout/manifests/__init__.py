"""From a resolved spec to the Kubernetes objects each tier needs, and the GPU memory pre-flight
that decides whether a tier can run at all. Pure functions returning plain dicts."""

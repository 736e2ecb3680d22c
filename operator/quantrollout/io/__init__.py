"""The I/O seams of one pass: small Protocols the observer and the executor use, so both run
against fakes and an injected clock in unit tests and against the real API server and Prometheus
everywhere else."""

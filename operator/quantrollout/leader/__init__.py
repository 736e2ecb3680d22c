"""Leader election among operator replicas on a Lease (`election`: pure; `lease`: I/O)."""

"""The local stack the tests and the demo run against: a real Kubernetes control plane and a
real Prometheus, all on loopback, started from binaries this project builds or installs itself.

- `controlplane`: etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler and
  KWOK (fake GPU nodes whose pods really get scheduled and turn Ready).
- `prometheus`: Debian's Prometheus with a generated config whose scrape targets can be added
  at run time.
- `procs`: starting, health-checking and stopping the processes, leaving none behind.

This is test and demo support, never imported by the operator package.
"""

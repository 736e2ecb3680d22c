// Command promsd runs Prometheus' own Kubernetes service discovery (the pod role, from the
// Prometheus release Debian ships: v2.42, Go module v0.42.0) against a kubeconfig and prints what
// it discovers in one namespace as file_sd JSON: every target with all its __meta_kubernetes_*
// labels. Debian's Prometheus is built without Kubernetes discovery, so the tests feed it these
// targets through file_sd and its own relabelling does the rest.
//
//	promsd KUBECONFIG NAMESPACE MIN_TARGETS   (waits up to 60s for at least MIN_TARGETS targets)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/discovery/targetgroup"
)

type fileSD struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: promsd KUBECONFIG NAMESPACE MIN_TARGETS")
		os.Exit(2)
	}
	want, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "promsd: MIN_TARGETS:", err)
		os.Exit(2)
	}
	cfg := &kubernetes.SDConfig{
		Role:               kubernetes.RolePod,
		KubeConfig:         os.Args[1],
		NamespaceDiscovery: kubernetes.NamespaceDiscovery{Names: []string{os.Args[2]}},
		HTTPClientConfig:   config.DefaultHTTPClientConfig,
	}
	d, err := kubernetes.New(log.NewNopLogger(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "promsd:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	updates := make(chan []*targetgroup.Group)
	go d.Run(ctx, updates)
	groups := map[string]*targetgroup.Group{}
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "promsd: fewer than %d targets after 60s\n", want)
			os.Exit(1)
		case batch := <-updates:
			for _, g := range batch {
				groups[g.Source] = g
			}
			var out []fileSD
			for _, g := range groups {
				for _, t := range g.Targets {
					labels := map[string]string{}
					for k, v := range g.Labels {
						labels[string(k)] = string(v)
					}
					for k, v := range t {
						labels[string(k)] = string(v)
					}
					address := labels["__address__"]
					delete(labels, "__address__")
					out = append(out, fileSD{Targets: []string{address}, Labels: labels})
				}
			}
			if len(out) >= want {
				if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
					fmt.Fprintln(os.Stderr, "promsd:", err)
					os.Exit(1)
				}
				return
			}
		}
	}
}

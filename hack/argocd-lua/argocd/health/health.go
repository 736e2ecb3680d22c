// Package health holds the two types of github.com/argoproj/argo-cd/gitops-engine/pkg/health
// (Apache-2.0, Copyright The Argo Authors) that util/lua uses, copied from argo-cd v3.5.7's
// gitops-engine/pkg/health/health.go. That module is not served by the Go module proxy (argo-cd
// builds it from its own tree through a replace), so these lines are not checked by
// verify-upstream; they are plain data (a string type, six constants, a two-field struct).
package health

// Represents resource health status
type HealthStatusCode string

const (
	// Indicates that health assessment failed and actual health status is unknown
	HealthStatusUnknown HealthStatusCode = "Unknown"
	// Progressing health status means that resource is not healthy but still have a chance to reach healthy state
	HealthStatusProgressing HealthStatusCode = "Progressing"
	// Resource is 100% healthy
	HealthStatusHealthy HealthStatusCode = "Healthy"
	// Assigned to resources that are suspended or paused.
	HealthStatusSuspended HealthStatusCode = "Suspended"
	// Degrade status is used if resource status indicates failure or resource could not reach healthy state
	// within some timeout.
	HealthStatusDegraded HealthStatusCode = "Degraded"
	// Indicates that resource is missing in the cluster.
	HealthStatusMissing HealthStatusCode = "Missing"
)

// Holds health assessment results
type HealthStatus struct {
	Status  HealthStatusCode `json:"status,omitempty"`
	Message string           `json:"message,omitempty"`
}

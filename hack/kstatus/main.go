// Command kstatus prints what sigs.k8s.io/cli-utils/pkg/kstatus/status (the library Flux's
// health checks and `kstatus`-based waits use) computes for Kubernetes objects: it reads a JSON
// array of objects (as the API server returns them) on stdin and writes a JSON array of
// {"status", "message"} in the same order (status: InProgress, Current, Failed, Terminating,
// NotFound or Unknown).
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading a JSON array of objects:", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(objects))
	for _, raw := range objects {
		// Decoded as client-go decodes API answers (integers as int64), which kstatus expects.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			results = append(results, result{Status: "Unknown", Error: err.Error()})
			continue
		}
		r, err := status.Compute(obj)
		if err != nil {
			results = append(results, result{Status: "Unknown", Error: err.Error()})
			continue
		}
		results = append(results, result{Status: r.Status.String(), Message: r.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}

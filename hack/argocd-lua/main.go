// Command argocd-lua runs QuantizedModel's Argo CD health script and resource actions exactly as
// Argo CD v3.5.7 runs them: the argocd-cm keys are read by Argo CD's own parsing code, scripts run
// in gopher-lua v1.1.2 set up by Argo CD's own util/lua (copied verbatim into ./argocd, see
// verify-upstream), and an action's result becomes the JSON merge patch Argo CD's API server
// would send (server/application/application.go, patchResource).
//
//	argocd-lua run < request.json        # one JSON request in, one JSON answer out
//	argocd-lua verify-upstream ARGOCD_DIR  # the copies in ./argocd still equal argo-cd's files
//
// A request is {"configMap": {"data": {...argocd-cm data...}}, "cases": [{"id", "op", "object",
// "action"}]}, op being "health", "actions" (discovery) or "action" (run one action).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	jsonpatch "github.com/evanphx/json-patch"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/quantrollout/quantrollout/hack/argocd-lua/argocd/lua"
	"github.com/quantrollout/quantrollout/hack/argocd-lua/argocd/settings"
)

type request struct {
	ConfigMap struct {
		Data map[string]string `json:"data"`
	} `json:"configMap"`
	Cases []testCase `json:"cases"`
}

type testCase struct {
	ID     string         `json:"id"`
	Op     string         `json:"op"`
	Object map[string]any `json:"object"`
	Action string         `json:"action,omitempty"`
}

type offered struct {
	Name        string `json:"name"`
	Disabled    bool   `json:"disabled"`
	DisplayName string `json:"displayName,omitempty"`
	IconClass   string `json:"iconClass,omitempty"`
}

type answer struct {
	ID string `json:"id"`
	// health: what the Argo CD UI shows (an error becomes Unknown with the error as the message,
	// as gitops-engine's health.GetResourceHealth does).
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	// actions: what the UI offers, sorted by name.
	Actions []offered `json:"actions,omitempty"`
	// action: the merge patch Argo CD sends for each patched object, and created objects.
	Patches []json.RawMessage `json:"patches,omitempty"`
	Creates []map[string]any  `json:"creates,omitempty"`
	// Any error Argo CD would report (a Lua error, a bad return value, a missing script).
	Error string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "verify-upstream" {
		problems, err := verifyUpstream(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "argocd-lua:", err)
			os.Exit(2)
		}
		for _, p := range problems {
			fmt.Println(p)
		}
		if len(problems) > 0 {
			os.Exit(1)
		}
		fmt.Println("the copies in ./argocd match", os.Args[2])
		return
	}
	if len(os.Args) != 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua run < request.json | argocd-lua verify-upstream ARGOCD_DIR")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(2)
	}
}

func run(in io.Reader, out io.Writer) error {
	var req request
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	overrides, err := settings.ResourceOverrides(req.ConfigMap.Data)
	if err != nil {
		return fmt.Errorf("argocd-cm: %w", err)
	}
	answers := make([]answer, 0, len(req.Cases))
	for _, c := range req.Cases {
		obj := &unstructured.Unstructured{Object: c.Object}
		a := answer{ID: c.ID}
		switch c.Op {
		case "health":
			health(lua.ResourceHealthOverrides(overrides), obj, &a)
		case "actions":
			discover(lua.VM{ResourceOverrides: overrides}, obj, &a)
		case "action":
			act(lua.VM{ResourceOverrides: overrides}, obj, c.Action, &a)
		default:
			return fmt.Errorf("case %q: unknown op %q", c.ID, c.Op)
		}
		answers = append(answers, a)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", " ")
	return enc.Encode(answers)
}

// health is controller/health.go's call: GetResourceHealth with the argocd-cm overrides.
func health(overrides lua.ResourceHealthOverrides, obj *unstructured.Unstructured, a *answer) {
	hs, err := overrides.GetResourceHealth(obj)
	switch {
	case err != nil:
		a.Status, a.Message, a.Error = "Unknown", err.Error(), err.Error()
	case hs == nil:
		a.Error = "no health script for this kind"
	default:
		a.Status, a.Message = string(hs.Status), hs.Message
	}
}

// discover is server/application/application.go's getAvailableActions (a VM without open libs).
func discover(vm lua.VM, obj *unstructured.Unstructured, a *answer) {
	scripts, err := vm.GetResourceActionDiscovery(obj)
	if err != nil {
		a.Error = err.Error()
		return
	}
	if len(scripts) == 0 {
		a.Error = "no action discovery script for this kind"
		return
	}
	actions, err := vm.ExecuteResourceActionDiscovery(obj, scripts)
	if err != nil {
		a.Error = err.Error()
		return
	}
	for _, x := range actions {
		a.Actions = append(a.Actions, offered{x.Name, x.Disabled, x.DisplayName, x.IconClass})
	}
	sort.Slice(a.Actions, func(i, j int) bool { return a.Actions[i].Name < a.Actions[j].Name })
}

// act is the server's RunResourceAction: the action's Lua, then for a patched object the JSON
// merge patch between the live object and the script's result (patchResource).
func act(vm lua.VM, obj *unstructured.Unstructured, name string, a *answer) {
	action, err := vm.GetResourceAction(obj, name)
	if err != nil {
		a.Error = err.Error()
		return
	}
	live, err := json.Marshal(obj.Object)
	if err != nil {
		a.Error = err.Error()
		return
	}
	impacted, err := vm.ExecuteResourceAction(obj, action.ActionLua, nil)
	if err != nil {
		a.Error = err.Error()
		return
	}
	for _, r := range impacted {
		switch r.K8SOperation {
		case lua.PatchOperation:
			updated, err := json.Marshal(r.UnstructuredObj.Object)
			if err != nil {
				a.Error = err.Error()
				return
			}
			patch, err := jsonpatch.CreateMergePatch(live, updated)
			if err != nil {
				a.Error = fmt.Sprintf("error calculating merge patch: %v", err)
				return
			}
			a.Patches = append(a.Patches, patch)
		case lua.CreateOperation:
			a.Creates = append(a.Creates, r.UnstructuredObj.Object)
		}
	}
}

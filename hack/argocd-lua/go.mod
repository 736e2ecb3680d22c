// Module argocd-lua runs the Argo CD health script and resource actions of QuantizedModel under
// Argo CD's own Lua engine setup (util/lua of argo-cd v3.5.7, copied, with gopher-lua and
// gopher-json at the versions argo-cd v3.5.7 pins). A module of its own: argo-cd itself cannot be
// required (its gitops-engine module is built from its own tree by a replace).
module github.com/quantrollout/quantrollout/hack/argocd-lua

go 1.24.0

require (
	github.com/bmatcuk/doublestar/v4 v4.10.0
	github.com/evanphx/json-patch v5.9.11+incompatible
	github.com/gobwas/glob v0.2.3
	github.com/yuin/gopher-lua v1.1.2
	k8s.io/apimachinery v0.33.13
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/fxamacker/cbor/v2 v2.7.0 // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/json-iterator/go v1.1.12 // indirect
	github.com/modern-go/concurrent v0.0.0-20180306012644-bacd9c7ef1dd // indirect
	github.com/modern-go/reflect2 v1.0.2 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/net v0.38.0 // indirect
	golang.org/x/text v0.23.0 // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
	k8s.io/klog/v2 v2.130.1 // indirect
	k8s.io/utils v0.0.0-20241104100929-3ea5e8cea738 // indirect
	sigs.k8s.io/json v0.0.0-20241010143419-9aa6b5e7a4b3 // indirect
	sigs.k8s.io/randfill v1.0.0 // indirect
	sigs.k8s.io/structured-merge-diff/v4 v4.6.0 // indirect
)

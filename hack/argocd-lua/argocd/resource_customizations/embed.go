// Package resource_customizations stands for argo-cd's tree of built-in Lua scripts. Argo CD
// ships none for quantrollout.io (verify-upstream checks that the pinned release has no
// resource_customizations/quantrollout.io), so the only scripts util/lua finds are the ones in
// argocd-cm, exactly as in a real Argo CD. The embedded README only keeps the FS non-empty.
package resource_customizations //nolint:revive // argo-cd's package name

import "embed"

//go:embed README.md
var Embedded embed.FS

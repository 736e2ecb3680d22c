// Package argoglob is argo-cd's util/glob.Match (v3.5.7) without its compiled-pattern cache and
// its log line: the same gobwas/glob compile and match, the same false on a bad pattern.
// util/lua calls it only for wildcard keys in argocd-cm (resource.customizations.health.*_*).
package argoglob

import "github.com/gobwas/glob"

// Match tries to match a text with a given glob pattern.
func Match(pattern, text string, separators ...rune) bool {
	compiled, err := glob.Compile(pattern, separators...)
	if err != nil {
		return false
	}
	return compiled.Match(text)
}

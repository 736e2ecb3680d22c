package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"sort"
)

// copied lists, per file of ours, the argo-cd file it copies and which declarations: nil means
// every declaration of the upstream file (the whole file is a copy, imports aside).
var copied = []struct {
	ours, theirs string
	names        []string
}{
	{"argocd/lua/lua.go", "util/lua/lua.go", nil},
	{"argocd/lua/oslib_safe.go", "util/lua/oslib_safe.go", nil},
	{"argocd/lua/impacted_resource.go", "util/lua/impacted_resource.go", nil},
	{"argocd/appv1/types.go", "pkg/apis/application/v1alpha1/types.go", []string{
		"KnownTypeField", "OverrideIgnoreDiff", "ResourceOverride", "ResourceOverride.GetActions",
		"ResourceActions", "ResourceActionDefinition", "ResourceAction", "ResourceActionParam",
		"UnmarshalToUnstructured",
	}},
	{"argocd/settings/settings.go", "util/settings/settings.go", []string{
		"SettingsManager.appendResourceOverridesFromSplitKeys", "convertToOverrideKey",
	}},
}

// verifyUpstream compares each copied declaration, printed without comments, with argo-cd's.
func verifyUpstream(argocd string) ([]string, error) {
	here, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, c := range copied {
		ours, err := decls(filepath.Join(here, c.ours))
		if err != nil {
			return nil, err
		}
		theirs, err := decls(filepath.Join(argocd, c.theirs))
		if err != nil {
			return nil, err
		}
		names := c.names
		if names == nil {
			for name := range theirs {
				names = append(names, name)
			}
			for name := range ours {
				if _, ok := theirs[name]; !ok {
					problems = append(problems, fmt.Sprintf("%s: %s is not in %s", c.ours, name, c.theirs))
				}
			}
			sort.Strings(names)
		}
		for _, name := range names {
			switch o, t := ours[name], theirs[name]; {
			case t == "":
				problems = append(problems, fmt.Sprintf("%s: %s no longer exists upstream", c.theirs, name))
			case o == "":
				problems = append(problems, fmt.Sprintf("%s: %s of %s is missing", c.ours, name, c.theirs))
			case o != t:
				problems = append(problems, fmt.Sprintf("%s: %s differs from %s", c.ours, name, c.theirs))
			}
		}
	}
	// No built-in scripts for our kind, so argocd-cm is the only source (resource_customizations).
	if _, err := os.Stat(filepath.Join(argocd, "resource_customizations", "quantrollout.io")); err == nil {
		problems = append(problems, "argo-cd now ships built-in scripts for quantrollout.io")
	}
	return problems, nil
}

// decls maps each top-level declaration of a Go file (imports excluded) to its source, printed
// from the syntax tree without comments, so only code counts.
func decls(path string) (map[string]string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		var buf bytes.Buffer
		if err := printer.Fprint(&buf, fset, d); err != nil {
			return nil, err
		}
		for _, name := range declNames(d) {
			out[name] = buf.String()
		}
	}
	return out, nil
}

func declNames(d ast.Decl) []string {
	switch d := d.(type) {
	case *ast.FuncDecl:
		if d.Recv != nil && len(d.Recv.List) == 1 {
			t := d.Recv.List[0].Type
			if star, ok := t.(*ast.StarExpr); ok {
				t = star.X
			}
			if id, ok := t.(*ast.Ident); ok {
				return []string{id.Name + "." + d.Name.Name}
			}
		}
		return []string{d.Name.Name}
	case *ast.GenDecl:
		if d.Tok == token.IMPORT {
			return nil
		}
		var names []string
		for _, s := range d.Specs {
			switch s := s.(type) {
			case *ast.TypeSpec:
				names = append(names, s.Name.Name)
			case *ast.ValueSpec:
				for _, n := range s.Names {
					names = append(names, n.Name)
				}
			}
		}
		return names
	}
	return nil
}

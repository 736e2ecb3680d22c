// ocitool writes and checks OCI image layouts without a container engine, with
// go-containerregistry (the library behind crane, ko and kaniko).
//
//	ocitool build -layout DIR -ref TAG -layer A.tar.gz [-layer B.tar.gz ...] -user UID:GID \
//	        -entrypoint PATH [-env K=V ...] [-label K=V ...] [-created RFC3339]
//	ocitool validate -layout DIR
//	ocitool config -layout DIR -ref TAG      (prints the image's config JSON)
//
// build writes a fresh layout: one linux/amd64 image whose layers are the given gzipped tar
// files, in order, and records TAG as its org.opencontainers.image.ref.name. validate reads a
// layout back the way a registry client would and checks every digest, size, diff ID and media
// type of every image in it (go-containerregistry's validate package).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const refName = "org.opencontainers.image.ref.name"

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: ocitool build|validate|config -layout DIR ..."))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("layout", "", "OCI image layout directory")
	ref := fs.String("ref", "", "tag recorded as org.opencontainers.image.ref.name")
	user := fs.String("user", "", "UID:GID the image runs as")
	entrypoint := fs.String("entrypoint", "", "the image's entrypoint")
	created := fs.String("created", "1970-01-01T00:00:00Z", "creation time (RFC 3339), fixed for reproducible digests")
	var layers, env, labels list
	fs.Var(&layers, "layer", "gzipped tar layer (repeatable, in order)")
	fs.Var(&env, "env", "K=V environment variable (repeatable)")
	fs.Var(&labels, "label", "K=V label and manifest annotation (repeatable)")
	if err := fs.Parse(os.Args[2:]); err != nil || *dir == "" {
		fail(errors.New("-layout is required"))
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(*dir, *ref, layers, *user, *entrypoint, env, labels, *created)
	case "validate":
		err = check(*dir)
	case "config":
		err = printConfig(*dir, *ref)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ocitool:", err)
	os.Exit(1)
}

func build(dir, ref string, layers []string, user, entrypoint string, env, labels []string, created string) error {
	if ref == "" || user == "" || entrypoint == "" || len(layers) == 0 {
		return errors.New("build needs -ref, -user, -entrypoint and at least one -layer")
	}
	when, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, path := range layers {
		layer, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return fmt.Errorf("layer %s: %w", path, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
			Created: v1.Time{Time: when}, CreatedBy: "hack/build-image.py " + path,
		}}); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = "amd64", "linux", v1.Time{Time: when}
	cfg.Config.User = user
	cfg.Config.Entrypoint = []string{entrypoint}
	cfg.Config.Env = env
	cfg.Config.Labels = map[string]string{}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		cfg.Config.Labels[k] = v
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	img = mutate.Annotations(img, cfg.Config.Labels).(v1.Image)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	out, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	platform := v1.Platform{OS: "linux", Architecture: "amd64"}
	return out.AppendImage(img, layout.WithAnnotations(map[string]string{refName: ref}), layout.WithPlatform(platform))
}

func check(dir string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return err
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(manifest.Manifests) == 0 {
		return errors.New("the layout holds no image")
	}
	if err := validate.Index(idx); err != nil {
		return err
	}
	for _, desc := range manifest.Manifests {
		fmt.Printf("%s %s %s\n", desc.Annotations[refName], desc.MediaType, desc.Digest)
	}
	return nil
}

func printConfig(dir, ref string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return err
	}
	manifest, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, desc := range manifest.Manifests {
		if desc.Annotations[refName] != ref {
			continue
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return err
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(cfg)
	}
	return fmt.Errorf("no image tagged %q in %s", ref, dir)
}

// kustomize-render: `kustomize build DIR` for the tests, with the kustomize API pinned in go.mod.
//
// No kustomize binary is needed on the machine: scripts/setup.sh builds this program once (Go module proxy
// only), and tests/test_deploy.py renders every overlay with it. It uses kustomize's default options (the
// same as `kustomize build` without flags: root-only load restrictions, no plugins, no Helm), so what passes
// here renders the same with the operator's kustomize or `kubectl kustomize`.
//
// Usage: kustomize-render DIR   (prints the rendered objects as one multi-document YAML stream)
package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kustomize-render DIR")
		os.Exit(2)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "kustomize-render %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	out, err := resources.AsYaml()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kustomize-render %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		os.Exit(1)
	}
}

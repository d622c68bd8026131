package deploy

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"path"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Names the base gives its objects; tests and overlays refer to them.
const (
	Namespace          = "zonelb"
	ServiceAccountName = "zonelb"
	ClusterRoleName    = "zonelb"
	ConfigMapName      = "zonelb"
	DaemonSetName      = "zonelb"
	ContainerName      = "zonelb"
	// ConfigKey is the ConfigMap key that holds the daemon's config file.
	ConfigKey = "config.yaml"
)

//go:embed *.yaml
var files embed.FS

// kustomization is the part of kustomization.yaml the base uses. Decoding
// is strict: any other field is an error (see the package doc).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// clusterScoped lists the kinds in the base that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace":          true,
	"ClusterRole":        true,
	"ClusterRoleBinding": true,
}

// Objects returns the base's objects as `kubectl kustomize deploy/` builds
// them: in the order kustomization.yaml lists the resource files, each
// file's documents in order. The base writes every namespace out in full;
// Objects checks that each namespaced object (and each ServiceAccount
// subject of a binding) is in the kustomization's namespace, which is what
// Kustomize's namespace transformer would otherwise rewrite.
func Objects() ([]*unstructured.Unstructured, error) {
	raw, err := files.ReadFile("kustomization.yaml")
	if err != nil {
		return nil, fmt.Errorf("read kustomization.yaml: %w", err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		return nil, fmt.Errorf("parse kustomization.yaml (only apiVersion, kind, namespace and resources are supported): %w", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("kustomization.yaml: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	if k.Namespace == "" {
		return nil, errors.New("kustomization.yaml: namespace is required")
	}
	var objs []*unstructured.Unstructured
	for _, name := range k.Resources {
		if path.Dir(name) != "." {
			return nil, fmt.Errorf("kustomization.yaml: resource %q: only files beside kustomization.yaml are supported", name)
		}
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read resource %s: %w", name, err)
		}
		docs, err := decodeAll(data)
		if err != nil {
			return nil, fmt.Errorf("parse resource %s: %w", name, err)
		}
		for _, o := range docs {
			if err := checkNamespace(o, k.Namespace); err != nil {
				return nil, fmt.Errorf("resource %s: %w", name, err)
			}
			objs = append(objs, o)
		}
	}
	return objs, nil
}

func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(m) == 0 { // an empty document between two ---
			continue
		}
		o := &unstructured.Unstructured{Object: m}
		if o.GetAPIVersion() == "" || o.GetKind() == "" || o.GetName() == "" {
			return nil, fmt.Errorf("object without apiVersion, kind or name: %v", m)
		}
		out = append(out, o)
	}
}

func checkNamespace(o *unstructured.Unstructured, ns string) error {
	id := o.GetKind() + "/" + o.GetName()
	if clusterScoped[o.GetKind()] {
		if o.GetNamespace() != "" {
			return fmt.Errorf("%s is cluster-scoped but has namespace %q", id, o.GetNamespace())
		}
	} else if o.GetNamespace() != ns {
		return fmt.Errorf("%s: namespace %q, want the kustomization's %q", id, o.GetNamespace(), ns)
	}
	if o.GetKind() == "ClusterRoleBinding" || o.GetKind() == "RoleBinding" {
		subjects, _, err := unstructured.NestedSlice(o.Object, "subjects")
		if err != nil {
			return fmt.Errorf("%s: subjects: %w", id, err)
		}
		for _, s := range subjects {
			m, _ := s.(map[string]any)
			if m["kind"] == "ServiceAccount" && m["namespace"] != ns {
				return fmt.Errorf("%s: ServiceAccount subject %v in namespace %v, want %q", id, m["name"], m["namespace"], ns)
			}
		}
	}
	return nil
}

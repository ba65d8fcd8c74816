package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// manifest is one Kubernetes object as decoded, with where it came from.
type manifest struct {
	File       string `json:"file"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Object as the API types print it (their JSON tags), so the test sees
	// what an API server would be sent.
	Object runtime.Object `json:"object"`
}

// loadKubernetes decodes every document of the files into the API types of
// k8s.io/api, strictly, as `kubectl apply --validate=strict` asks the API
// server to: an unknown or duplicated field, a value of the wrong type, or
// a kind outside the groups below is an error.
func loadKubernetes(files []string) ([]manifest, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	manifests := []manifest{}
	for _, file := range files {
		content, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		reader := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(content)))
		for index := 0; ; index++ {
			document, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", file, index, err)
			}
			asJSON, err := yaml.ToJSON(document)
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", file, index, err)
			}
			if string(bytes.TrimSpace(asJSON)) == "null" {
				continue // only comments, or an empty document between `---`
			}
			object, kind, err := decoder.Decode(document, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", file, index, err)
			}
			manifests = append(manifests, manifest{
				File:       filepath.Base(file),
				APIVersion: kind.GroupVersion().String(),
				Kind:       kind.Kind,
				Object:     object,
			})
		}
	}
	return manifests, nil
}

// Command check reads docker/ files with the parsers of the tools that run
// them, so they can be checked on machines without a Docker engine, a
// Kubernetes cluster, Prometheus or Grafana:
//
//	go run ./docker/check compose FILE...      // compose-go: the loader of `docker compose`
//	go run ./docker/check dockerfile FILE      // BuildKit's Dockerfile parser and linter
//	go run ./docker/check kubernetes FILE...   // k8s.io/api types, strict decoding
//	go run ./docker/check prometheus FILE      // strict, Prometheus's documented keys
//	go run ./docker/check dashboard FILE       // Grafana's dashboard schema, PromQL parser
//	go run ./docker/check provisioning FILE    // Grafana provisioning keys, unknown refused
//
// It prints JSON on stdout: each compose project as `docker compose config
// --format json` would (extends resolved, paths absolute), a Dockerfile's
// stages with their instructions and the linter's warnings, the Kubernetes
// objects as the API types print them, a Prometheus config's scrape jobs, a
// dashboard's panels with the metrics each query selects. A file that does
// not parse is an error (exit status 1). tests/docker.rs checks the content.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: check compose|kubernetes FILE... | check dockerfile|prometheus|dashboard|provisioning FILE"))
	}
	var out any
	var err error
	switch os.Args[1] {
	case "compose":
		out, err = loadCompose(os.Args[2:])
	case "dockerfile":
		out, err = loadDockerfile(os.Args[2])
	case "kubernetes":
		out, err = loadKubernetes(os.Args[2:])
	case "prometheus":
		out, err = loadPrometheus(os.Args[2])
	case "dashboard":
		out, err = loadDashboard(os.Args[2])
	case "provisioning":
		out, err = loadProvisioning(os.Args[2])
	default:
		err = fmt.Errorf("unknown kind %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "check:", err)
	os.Exit(1)
}

// loadCompose loads each file as its own project, keyed by file name.
func loadCompose(files []string) (map[string]*types.Project, error) {
	projects := map[string]*types.Project{}
	for _, file := range files {
		options, err := cli.NewProjectOptions(
			[]string{file},
			cli.WithWorkingDirectory(filepath.Dir(file)),
			cli.WithResolvedPaths(true),
		)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		project, err := options.LoadProject(context.Background())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		projects[filepath.Base(file)] = project
	}
	return projects, nil
}

type stage struct {
	Name         string        `json:"name"`
	Base         string        `json:"base"`
	Instructions []instruction `json:"instructions"`
}

type instruction struct {
	// Keyword in upper case: RUN, COPY, USER, ENTRYPOINT, ...
	Keyword string `json:"keyword"`
	// Flags such as --from=build or --mount=...
	Flags []string `json:"flags"`
	// Arguments as parsed: one per word for the shell form, the array for the JSON form.
	Args []string `json:"args"`
	// JSON form (exec form) of ENTRYPOINT, CMD, RUN.
	JSON bool `json:"json"`
}

type dockerfile struct {
	Stages   []stage  `json:"stages"`
	Warnings []string `json:"warnings"`
}

func loadDockerfile(file string) (*dockerfile, error) {
	reader, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	result, err := parser.Parse(reader)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := &dockerfile{Warnings: []string{}}
	for _, warning := range result.Warnings {
		out.Warnings = append(out.Warnings, warning.Short)
	}
	lint := linter.New(&linter.Config{
		Warn: func(rule, description, url, message string, location []parser.Range) {
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: %s", rule, message))
		},
	})
	stages, _, err := instructions.Parse(result.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// The AST keeps every instruction's flags and arguments; the stages
	// give names and bases. Walk both in order.
	current := -1
	for _, node := range result.AST.Children {
		keyword := strings.ToUpper(node.Value)
		if keyword == "FROM" {
			current++
			if current >= len(stages) {
				return nil, fmt.Errorf("%s: more FROM lines than stages", file)
			}
			out.Stages = append(out.Stages, stage{
				Name:         stages[current].Name,
				Base:         stages[current].BaseName,
				Instructions: []instruction{},
			})
			continue
		}
		if current < 0 {
			continue // ARG before the first FROM
		}
		var args []string
		for next := node.Next; next != nil; next = next.Next {
			args = append(args, next.Value)
		}
		out.Stages[current].Instructions = append(out.Stages[current].Instructions, instruction{
			Keyword: keyword,
			Flags:   append([]string{}, node.Flags...),
			Args:    args,
			JSON:    node.Attributes["json"],
		})
	}
	return out, nil
}

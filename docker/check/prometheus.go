package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

type prometheusConfig struct {
	ScrapeInterval string      `json:"scrape_interval"`
	Jobs           []scrapeJob `json:"jobs"`
}

type scrapeJob struct {
	Name           string `json:"name"`
	MetricsPath    string `json:"metrics_path"`
	Scheme         string `json:"scheme"`
	ScrapeInterval string `json:"scrape_interval"`
	// Targets of its static_configs.
	Targets []string `json:"targets"`
}

// The keys of Prometheus's configuration file these files use, spelled as
// its documentation spells them. Decoding refuses any other key, so a
// misspelt or misplaced one fails here as it fails in Prometheus.
// (Prometheus's own loader, github.com/prometheus/prometheus/config,
// links every service discovery it supports: its cloud SDKs made a cold
// build of this checker download 900 MB, too much for CI.)
type promFile struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName        string `yaml:"job_name"`
		MetricsPath    string `yaml:"metrics_path"`
		Scheme         string `yaml:"scheme"`
		ScrapeInterval string `yaml:"scrape_interval"`
		ScrapeTimeout  string `yaml:"scrape_timeout"`
		StaticConfigs  []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// loadPrometheus reads a configuration strictly (known keys only, durations
// in Prometheus's syntax, Prometheus's defaults) and prints the scrape jobs
// with their static targets.
func loadPrometheus(file string) (*prometheusConfig, error) {
	content, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var parsed promFile
	decoder := yaml.NewDecoder(bytes.NewReader(content))
	decoder.KnownFields(true)
	if err := decoder.Decode(&parsed); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	global, err := duration(parsed.Global.ScrapeInterval, "1m")
	if err != nil {
		return nil, fmt.Errorf("%s: global.scrape_interval: %w", file, err)
	}
	for _, d := range []string{parsed.Global.ScrapeTimeout, parsed.Global.EvaluationInterval} {
		if _, err := duration(d, "1m"); err != nil {
			return nil, fmt.Errorf("%s: global: %w", file, err)
		}
	}
	out := &prometheusConfig{ScrapeInterval: global, Jobs: []scrapeJob{}}
	seen := map[string]bool{}
	for _, scrape := range parsed.ScrapeConfigs {
		if scrape.JobName == "" || seen[scrape.JobName] {
			return nil, fmt.Errorf("%s: job_name %q is empty or not unique", file, scrape.JobName)
		}
		seen[scrape.JobName] = true
		interval, err := duration(scrape.ScrapeInterval, global)
		if err != nil {
			return nil, fmt.Errorf("%s: job %s: scrape_interval: %w", file, scrape.JobName, err)
		}
		if _, err := duration(scrape.ScrapeTimeout, "10s"); err != nil {
			return nil, fmt.Errorf("%s: job %s: scrape_timeout: %w", file, scrape.JobName, err)
		}
		job := scrapeJob{
			Name:           scrape.JobName,
			MetricsPath:    orDefault(scrape.MetricsPath, "/metrics"),
			Scheme:         orDefault(scrape.Scheme, "http"),
			ScrapeInterval: interval,
			Targets:        []string{},
		}
		if job.Scheme != "http" && job.Scheme != "https" {
			return nil, fmt.Errorf("%s: job %s: scheme %q is neither http nor https", file, job.Name, job.Scheme)
		}
		for _, static := range scrape.StaticConfigs {
			job.Targets = append(job.Targets, static.Targets...)
		}
		out.Jobs = append(out.Jobs, job)
	}
	return out, nil
}

// duration checks a Prometheus duration ("5s", "1m30s"); empty takes the default.
func duration(value, fallback string) (string, error) {
	parsed, err := model.ParseDuration(orDefault(value, fallback))
	if err != nil {
		return "", err
	}
	return parsed.String(), nil
}

func orDefault(value, fallback string) string {
	if value == "" {
		return fallback
	}
	return value
}

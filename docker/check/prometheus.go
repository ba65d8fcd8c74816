package main

import (
	"log/slog"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
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
	// Names of its other service discoveries (kubernetes_sd_configs, ...).
	Discovery []string `json:"discovery"`
}

// loadPrometheus loads a configuration with Prometheus's own loader (strict
// YAML, defaults, validation), as `promtool check config` does, and prints
// the scrape jobs with their static targets.
func loadPrometheus(file string) (*prometheusConfig, error) {
	cfg, err := config.LoadFile(file, false, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	scrapeConfigs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return nil, err
	}
	out := &prometheusConfig{
		ScrapeInterval: time.Duration(cfg.GlobalConfig.ScrapeInterval).String(),
		Jobs:           []scrapeJob{},
	}
	for _, scrape := range scrapeConfigs {
		job := scrapeJob{
			Name:           scrape.JobName,
			MetricsPath:    scrape.MetricsPath,
			Scheme:         scrape.Scheme,
			ScrapeInterval: time.Duration(scrape.ScrapeInterval).String(),
			Targets:        []string{},
			Discovery:      []string{},
		}
		for _, found := range scrape.ServiceDiscoveryConfigs {
			static, ok := found.(discovery.StaticConfig)
			if !ok {
				job.Discovery = append(job.Discovery, found.Name())
				continue
			}
			for _, group := range static {
				for _, target := range group.Targets {
					for _, value := range target {
						job.Targets = append(job.Targets, string(value))
					}
				}
			}
		}
		out.Jobs = append(out.Jobs, job)
	}
	return out, nil
}

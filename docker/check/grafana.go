package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

type grafanaDashboard struct {
	UID       string          `json:"uid"`
	Title     string          `json:"title"`
	Variables []queryVariable `json:"variables"`
	Panels    []panel         `json:"panels"`
}

type queryVariable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query string `json:"query"`
	// Metrics its label_values(...) or query_result(...) reads.
	Metrics []metricUse `json:"metrics"`
}

type panel struct {
	Title      string   `json:"title"`
	Type       string   `json:"type"`
	Row        string   `json:"row"`
	Datasource string   `json:"datasource"`
	Unit       string   `json:"unit"`
	Targets    []target `json:"targets"`
}

type target struct {
	RefID        string      `json:"refId"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
	Metrics      []metricUse `json:"metrics"`
}

// metricUse is a metric an expression selects: the function over its range
// when it is read through one (rate, increase, ...), and the labels the
// expression expects it to carry (its matchers, and `by` of the aggregations
// over it).
type metricUse struct {
	Name          string   `json:"name"`
	RangeFunction string   `json:"range_function"`
	Labels        []string `json:"labels"`
}

// loadDashboard checks a dashboard with the Grafana Foundation SDK's strict
// decoder (types generated from Grafana's own dashboard and panel schemas):
// a missing required field, an unknown one or a wrong type is an error. It
// then reads the panels and queries (plainly: the SDK's decoders drop a
// panel or query whose decoding found nothing wrong, as they return an
// empty error list as an error) and parses each query with Prometheus's
// PromQL parser, Grafana's variables replaced first.
func loadDashboard(file string) (*grafanaDashboard, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	plugins.RegisterDefaultPlugins()
	var checked dashboard.Dashboard
	if err := strictError(checked.UnmarshalJSONStrict(raw)); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var read rawDashboard
	if err := json.Unmarshal(raw, &read); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := &grafanaDashboard{
		UID:       read.UID,
		Title:     read.Title,
		Variables: []queryVariable{},
		Panels:    []panel{},
	}
	for _, variable := range read.Templating.List {
		found := queryVariable{Name: variable.Name, Type: variable.Type, Metrics: []metricUse{}}
		if variable.Type == string(dashboard.VariableTypeQuery) {
			if found.Query, err = variableQuery(variable.Query); err != nil {
				return nil, fmt.Errorf("%s: variable %s: %w", file, variable.Name, err)
			}
			if found.Metrics, err = variableMetrics(found.Query); err != nil {
				return nil, fmt.Errorf("%s: variable %s: %w", file, variable.Name, err)
			}
		}
		out.Variables = append(out.Variables, found)
	}
	if err := addPanels(out, read.Panels, ""); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

type rawDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []rawPanel `json:"panels"`
}

type rawPanel struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *rawDatasource `json:"datasource"`
	// A row's panels, when it is collapsed.
	Panels      []rawPanel `json:"panels"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Datasource   *rawDatasource `json:"datasource"`
		RefID        string         `json:"refId"`
		Expr         string         `json:"expr"`
		LegendFormat string         `json:"legendFormat"`
	} `json:"targets"`
}

type rawDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// addPanels lists the panels, a row's title on those below it until the next
// row, or on its own panels when it is collapsed.
func addPanels(out *grafanaDashboard, panels []rawPanel, row string) error {
	for _, read := range panels {
		if read.Type == "row" {
			row = read.Title
			if err := addPanels(out, read.Panels, row); err != nil {
				return err
			}
			continue
		}
		if _, known := cog.NewRuntime().ConfigForPanelcfgVariant(read.Type); !known {
			return fmt.Errorf("panel %q: type %q has no schema to check it against", read.Title, read.Type)
		}
		found := panel{
			Title:   read.Title,
			Type:    read.Type,
			Row:     row,
			Unit:    read.FieldConfig.Defaults.Unit,
			Targets: []target{},
		}
		for _, query := range read.Targets {
			source := query.Datasource
			if source == nil {
				source = read.Datasource
			}
			if source == nil || source.Type != "prometheus" {
				return fmt.Errorf("panel %q: query %s is not a Prometheus query", read.Title, query.RefID)
			}
			found.Datasource = source.UID
			metrics, err := promqlMetrics(query.Expr)
			if err != nil {
				return fmt.Errorf("panel %q: %w", read.Title, err)
			}
			found.Targets = append(found.Targets, target{
				RefID:        query.RefID,
				Expr:         query.Expr,
				LegendFormat: query.LegendFormat,
				Metrics:      metrics,
			})
		}
		out.Panels = append(out.Panels, found)
	}
	return nil
}

// variableQuery is the text of a query variable: a string, or the object
// the Prometheus variable editor saves ({"query": ..., "refId": ...}).
func variableQuery(query json.RawMessage) (string, error) {
	var text string
	if json.Unmarshal(query, &text) == nil {
		return text, nil
	}
	var object struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(query, &object); err != nil || object.Query == "" {
		return "", fmt.Errorf("a query without text: %s", query)
	}
	return object.Query, nil
}

// The Prometheus data source's variable functions that take a selector or
// an expression: label_values(SELECTOR, label), query_result(EXPR).
var variableFunction = regexp.MustCompile(`^\s*(label_values|query_result)\((.*?)(,\s*\w+)?\)\s*$`)

func variableMetrics(query string) ([]metricUse, error) {
	match := variableFunction.FindStringSubmatch(query)
	if match == nil {
		return nil, fmt.Errorf("%q is not label_values(SELECTOR, LABEL) or query_result(EXPR)", query)
	}
	metrics, err := promqlMetrics(match[2])
	if label := strings.TrimLeft(match[3], ", \t"); label != "" {
		for i := range metrics {
			metrics[i].Labels = append(metrics[i].Labels, label)
		}
	}
	return metrics, err
}

// Grafana's interval variables stand where PromQL takes a duration; any
// other variable stands inside a label matcher's string.
var (
	intervalVariable = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	otherVariable    = regexp.MustCompile(`\$\{\w+(:\w+)?\}|\$\w+`)
)

var promql = parser.NewParser(parser.Options{})

// promqlMetrics parses an expression and lists the metrics it selects. A
// selector without a metric name ({__name__=~"..."}) is refused: the test
// could not tell which metrics it reads.
func promqlMetrics(expr string) ([]metricUse, error) {
	substituted := intervalVariable.ReplaceAllString(expr, "1m")
	substituted = otherVariable.ReplaceAllString(substituted, "variable")
	parsed, err := promql.ParseExpr(substituted)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	metrics := []metricUse{}
	var problem error
	parser.Inspect(parsed, func(node parser.Node, path []parser.Node) error {
		selector, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if selector.Name == "" {
			problem = fmt.Errorf("%q: a selector without a metric name: %s", expr, selector)
			return nil
		}
		use := metricUse{Name: selector.Name, Labels: []string{}}
		for _, matcher := range selector.LabelMatchers {
			if matcher.Name != "__name__" {
				use.Labels = append(use.Labels, matcher.Name)
			}
		}
		for _, ancestor := range path {
			if aggregate, ok := ancestor.(*parser.AggregateExpr); ok && !aggregate.Without {
				use.Labels = append(use.Labels, aggregate.Grouping...)
			}
		}
		// A range read: Call(MatrixSelector(VectorSelector)).
		if len(path) >= 2 {
			if _, isRange := path[len(path)-1].(*parser.MatrixSelector); isRange {
				if call, isCall := path[len(path)-2].(*parser.Call); isCall {
					use.RangeFunction = call.Func.Name
				}
			}
		}
		metrics = append(metrics, use)
		return nil
	})
	return metrics, problem
}

// strictError is nil for an empty list of build errors: some of the SDK's
// generated decoders return their (nil) list as a non-nil error.
func strictError(err error) error {
	var list cog.BuildErrors
	if errors.As(err, &list) && len(list) == 0 {
		return nil
	}
	return err
}

func deref[T any](value *T) T {
	var zero T
	if value == nil {
		return zero
	}
	return *value
}

// Grafana's provisioning files, as its docs list their keys
// (grafana.com/docs/grafana/latest/administration/provisioning/): decoded
// with unknown keys refused, so a misspelt key fails here rather than being
// ignored by Grafana at start.
type provisioning struct {
	APIVersion        int                 `yaml:"apiVersion" json:"apiVersion"`
	Datasources       []provisionedSource `yaml:"datasources" json:"datasources"`
	DeleteDatasources []struct {
		Name  string `yaml:"name" json:"name"`
		OrgID int    `yaml:"orgId" json:"orgId"`
	} `yaml:"deleteDatasources" json:"deleteDatasources"`
	Providers []dashboardProvider `yaml:"providers" json:"providers"`
}

type provisionedSource struct {
	Name            string            `yaml:"name" json:"name"`
	Type            string            `yaml:"type" json:"type"`
	UID             string            `yaml:"uid" json:"uid"`
	Access          string            `yaml:"access" json:"access"`
	OrgID           int               `yaml:"orgId" json:"orgId"`
	URL             string            `yaml:"url" json:"url"`
	User            string            `yaml:"user" json:"user"`
	Database        string            `yaml:"database" json:"database"`
	BasicAuth       bool              `yaml:"basicAuth" json:"basicAuth"`
	BasicAuthUser   string            `yaml:"basicAuthUser" json:"basicAuthUser"`
	WithCredentials bool              `yaml:"withCredentials" json:"withCredentials"`
	IsDefault       bool              `yaml:"isDefault" json:"isDefault"`
	JSONData        map[string]any    `yaml:"jsonData" json:"jsonData"`
	SecureJSONData  map[string]string `yaml:"secureJsonData" json:"secureJsonData"`
	Version         int               `yaml:"version" json:"version"`
	Editable        bool              `yaml:"editable" json:"editable"`
}

type dashboardProvider struct {
	Name                  string `yaml:"name" json:"name"`
	OrgID                 int    `yaml:"orgId" json:"orgId"`
	Folder                string `yaml:"folder" json:"folder"`
	FolderUID             string `yaml:"folderUid" json:"folderUid"`
	Type                  string `yaml:"type" json:"type"`
	DisableDeletion       bool   `yaml:"disableDeletion" json:"disableDeletion"`
	UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds" json:"updateIntervalSeconds"`
	AllowUIUpdates        bool   `yaml:"allowUiUpdates" json:"allowUiUpdates"`
	Options               struct {
		Path                      string `yaml:"path" json:"path"`
		FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure" json:"foldersFromFilesStructure"`
	} `yaml:"options" json:"options"`
}

func loadProvisioning(file string) (*provisioning, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	decoder := yaml.NewDecoder(bytes.NewReader(raw))
	decoder.KnownFields(true)
	var out provisioning
	if err := decoder.Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if out.APIVersion != 1 {
		return nil, fmt.Errorf("%s: apiVersion %d (Grafana reads 1)", file, out.APIVersion)
	}
	return &out, nil
}

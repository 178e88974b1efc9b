package api

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Prometheus HTTP service discovery (contract v2, "Discovery for clients
// without a regd library"): the format of Prometheus's http_sd_configs
// (prometheus/prometheus discovery/http), which a Prometheus server
// polls at its refresh_interval, so that
//
//	http_sd_configs: [{url: "http://regd:8080/v1/prometheus/targets"}]
//
// scrapes every registered instance.

// Labels of each target group. Prometheus drops labels starting with
// "__" after relabelling: __meta_* labels are for relabel_configs.
const (
	labelService    = "__meta_regd_service"
	labelInstanceID = "__meta_regd_instance_id"
	labelStatus     = "__meta_regd_status"
	labelMetaPrefix = "__meta_regd_metadata_"
)

// targetGroup is one entry of the http_sd_configs answer: the targets
// ("host:port", what Prometheus puts in __address__) and their labels.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// prometheusTargets is GET /v1/prometheus/targets[?service=]: one target
// group per instance the filter selects (up ones by default; ?status= and
// ?meta.<key>= as for lists), sorted by service then id; every service's,
// or one service's. Reads like a list: consistent by default, ?stale for
// this node's view as it is, ?min_revision. Not a blocking query
// (Prometheus polls).
func (s *Server) prometheusTargets(c echo.Context) error {
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if o, err = withFilter(c, o); err != nil {
		return err
	}
	q := c.QueryParams()
	service := ""
	if vs, ok := q["service"]; ok {
		if len(vs) != 1 {
			return invalidParameter("service is given %d times; give one service, or none for every service", len(vs))
		}
		if err := registry.ValidateService(vs[0]); err != nil {
			return err
		}
		service = vs[0]
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	list := s.cfg.View.List(service, o.filter)
	groups := make([]targetGroup, 0, len(list.Instances))
	for _, inst := range list.Instances {
		groups = append(groups, targetGroupOf(inst))
	}
	setRevision(c, list.Revision)
	return c.JSON(http.StatusOK, groups)
}

// targetGroupOf is inst as a target group. Metadata keys become label
// names under labelMetaPrefix, sanitised to Prometheus's rule for label
// names ([a-zA-Z_][a-zA-Z0-9_]*): every other character is "_", as
// Prometheus's own service discoveries do (strutil.sanitizeLabelName).
// Two keys that sanitise alike ("a.b", "a-b") give one label: the value
// of the key last in byte order wins, the same on every call.
func targetGroupOf(inst registry.Instance) targetGroup {
	labels := make(map[string]string, 3+len(inst.Metadata))
	labels[labelService] = inst.Service
	labels[labelInstanceID] = inst.ID
	labels[labelStatus] = inst.Status
	keys := make([]string, 0, len(inst.Metadata))
	for k := range inst.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		labels[labelMetaPrefix+sanitizeLabelName(k)] = inst.Metadata[k]
	}
	return targetGroup{Targets: []string{inst.Address}, Labels: labels}
}

// sanitizeLabelName replaces every character of s that a Prometheus label
// name may not hold (anything but ASCII letters, digits and "_") with "_".
// A metadata key is never empty, and follows a prefix, so a leading digit
// is fine.
func sanitizeLabelName(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_':
			out = append(out, byte(r))
		default:
			out = append(out, '_')
		}
	}
	return string(out)
}

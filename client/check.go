package client

import (
	"encoding/json"
	"fmt"
	"time"
)

// Health statuses of Health.Status.
const (
	HealthPassing = "passing"
	HealthFailing = "failing"
)

// Check is a health check regd runs for an instance (contract v2, "Health
// checks run by the registry"): exactly one of HTTP (a URL; passing on a
// 2xx answer), TCP (host:port; passing when a connection is accepted) and
// GRPC (host:port, optionally /service; grpc.health.v1, passing on
// SERVING). While it passes, regd keeps the instance's lease alive: no
// heartbeats are needed. After Failures probes in a row fail, regd removes
// the instance and reports its expiry with cause "check_failed".
type Check struct {
	HTTP string `json:"http,omitempty"`
	TCP  string `json:"tcp,omitempty"`
	GRPC string `json:"grpc,omitempty"`
	// Interval between probes, 1 s to 1 h; 0: regd's default, 10 s.
	Interval time.Duration `json:"-"`
	// Timeout of a probe, below Interval; 0: regd's default, 2 s (half
	// the interval for intervals of 4 s and less).
	Timeout time.Duration `json:"-"`
	// Failures in a row before removal, 1–100; 0: regd's default, 3.
	Failures int `json:"failures,omitempty"`
}

// MarshalJSON writes the check as regd takes it: durations as strings
// such as "10s".
func (c Check) MarshalJSON() ([]byte, error) {
	type plain Check
	out := struct {
		plain
		Interval string `json:"interval,omitempty"`
		Timeout  string `json:"timeout,omitempty"`
	}{plain: plain(c)}
	if c.Interval != 0 {
		out.Interval = c.Interval.String()
	}
	if c.Timeout != 0 {
		out.Timeout = c.Timeout.String()
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads the check of an instance object.
func (c *Check) UnmarshalJSON(b []byte) error {
	type plain Check
	var in struct {
		plain
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*c = Check(in.plain)
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{in.Interval, &c.Interval}, {in.Timeout, &c.Timeout}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("regd: check duration %q: %w", d.s, err)
		}
		*d.dst = v
	}
	return nil
}

// Health is what regd last published about an instance's check: the
// status and count of failures of the probe that changed them, when it
// ended (CheckedAt), and its output (at most 4 KiB). regd writes it when the
// status or the count changes, not at every probe.
type Health struct {
	Status              string    `json:"status"`
	CheckedAt           time.Time `json:"checked_at"`
	Output              string    `json:"output"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
}

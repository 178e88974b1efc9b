//go:build e2e

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/ledgertest"
)

func TestMain(m *testing.M) { e2e.Main(m) }

// Timeouts shared by the tests.
const (
	readyTimeout = 30 * time.Second // a member's (re)start on a slow CI machine
	leaderWait   = 15 * time.Second // an election after a fault
)

// client is for setup and checks; load generators make their own.
var client = &http.Client{Timeout: 10 * time.Second}

// call sends one request (body as JSON when not empty) and reads the answer.
func call(ctx context.Context, c *http.Client, method, url, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func get(url string) (int, []byte, error) {
	return call(context.Background(), client, http.MethodGet, url, "")
}

// figure logs one measured figure, and prints it on stdout too so that
// `go test -v ./faults/ | grep '^faults:'` collects them for the docs.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	fmt.Printf("faults: %s: %s\n", t.Name(), msg)
}

type instance struct {
	Service      string            `json:"service"`
	ID           string            `json:"id"`
	Address      string            `json:"address"`
	Metadata     map[string]string `json:"metadata"`
	TTL          int64             `json:"ttl"`
	LeaseID      string            `json:"lease_id"`
	RegisteredAt *time.Time        `json:"registered_at"`
	Revision     int64             `json:"revision"`
}

func registerBody(addr string, ttl int, md map[string]string) string {
	b, _ := json.Marshal(map[string]any{"address": addr, "ttl": ttl, "metadata": md})
	return string(b)
}

// register puts service/id through base and returns the instance; an
// answer other than 200/201 is an error.
func register(base, service, id string, ttl int, md map[string]string) (instance, error) {
	code, body, err := call(context.Background(), client, http.MethodPut, base+"/v1/services/"+service+"/instances/"+id, registerBody("10.1.0.1:80", ttl, md))
	var in instance
	if err == nil && code != http.StatusOK && code != http.StatusCreated {
		err = fmt.Errorf("register %s/%s through %s: %d %s", service, id, base, code, body)
	}
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	return in, err
}

// list is one service's instances by id, as base lists them.
func list(base, service string) (map[string]instance, error) {
	code, body, err := get(base + "/v1/services/" + service + "/instances")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("list %s on %s: %d %s", service, base, code, body)
	}
	var l struct{ Instances []instance }
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, err
	}
	out := make(map[string]instance, len(l.Instances))
	for _, in := range l.Instances {
		out[in.ID] = in
	}
	return out, nil
}

// errorCode is the "code" of an error body, or "".
func errorCode(body []byte) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// ready reports whether base answers /readyz with 200; the status or error
// otherwise.
func ready(base string) (bool, string) {
	c := &http.Client{Timeout: time.Second}
	code, _, err := call(context.Background(), c, http.MethodGet, base+"/readyz", "")
	if err != nil {
		return false, err.Error()
	}
	return code == http.StatusOK, fmt.Sprint(code)
}

// counter counts outcomes by name, safely from many goroutines.
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// String lists the counts sorted by name: "200=12 503=3".
func (c *counter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, c.m[k])
	}
	return b.String()
}

func (c *counter) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ms renders a duration in milliseconds for figures.
func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// isRoot reports whether the tests run as root (mount, loop devices).
func isRoot() bool { return os.Geteuid() == 0 }

// exactlyOnce waits until every member's ledger holds exactly x, each
// expiry once, and the same entries on all of them (ledgertest.Wait); the
// reporters are the cluster's members unless x names them. It returns the
// ledger.
func exactlyOnce(t *testing.T, c *e2e.Cluster, timeout time.Duration, x ledgertest.Expected) []ledgertest.Entry {
	t.Helper()
	var members []ledgertest.Member
	names := map[string]bool{}
	for i, m := range c.Members {
		members = append(members, ledgertest.Member{Name: m.Name, URL: c.URL(i)})
		names[m.Name] = true
	}
	if x.Reporters == nil {
		x.Reporters = names
	}
	return ledgertest.Wait(t, timeout, members, x)
}

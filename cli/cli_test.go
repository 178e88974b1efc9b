package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regd/regd/cli"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// snapshotBody is a fake snapshot in etcd's format: content, then its
// SHA-256.
func snapshotBody(content string) []byte {
	sum := sha256.Sum256([]byte(content))
	return append([]byte(content), sum[:]...)
}

// fakeRegd answers like a regd node, with fixed bodies, and records the
// requests it got.
func fakeRegd(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var got []string
	mux := http.NewServeMux()
	js := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
	}
	mux.Handle("GET /v1/cluster", js(200, `{"node":"m1","leader":"m1","term":2,"revision":9,"members":[{"name":"m1","id":"8e9e05c52164694d","peer_urls":["http://10.0.0.1:2380"],"client_urls":["http://10.0.0.1:2379"],"is_leader":true,"is_learner":false},{"name":"m2","id":"91bc3c398fb3c146","peer_urls":["http://10.0.0.2:2380"],"client_urls":["http://10.0.0.2:2379"],"is_leader":false,"is_learner":false},{"name":"","id":"fd422379fda50e48","peer_urls":["http://10.0.0.4:2380"],"client_urls":[],"is_leader":false,"is_learner":true}],"alarms":["NOSPACE (member m2)"]}`))
	mux.Handle("POST /v1/cluster/members", js(201, `{"member":{"name":"m4","id":"fd422379fda50e48","peer_urls":["http://10.0.0.4:2380"],"client_urls":[],"is_leader":false,"is_learner":true},"initial_cluster":"m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m4=http://10.0.0.4:2380","flags":["--name=m4","--initial-advertise-peer-urls=http://10.0.0.4:2380","--listen-peer-urls=http://10.0.0.4:2380","--listen-client-urls=<client-url>","--advertise-client-urls=<client-url>","--http-addr=<host:port>","--data-dir=<dir>","--initial-cluster=m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m4=http://10.0.0.4:2380","--initial-cluster-state=existing"]}`))
	mux.Handle("POST /v1/cluster/members/fd422379fda50e48/promote", js(200, `{"name":"m4","id":"fd422379fda50e48","peer_urls":["http://10.0.0.4:2380"],"client_urls":["http://10.0.0.4:2379"],"is_leader":false,"is_learner":false}`))
	mux.Handle("DELETE /v1/cluster/members/fd422379fda50e48", js(204, ""))
	mux.Handle("DELETE /v1/cluster/members/91bc3c398fb3c146", js(409, `{"error":{"code":"quorum_at_risk","message":"removing member 91bc3c398fb3c146 would leave 2 voting members of which 1 are up"}}`))
	mux.Handle("GET /v1/export", js(200, `{"instances":[{"service":"db","id":"d1","address":"10.1.0.1:5432","metadata":{},"status":"up","weight":100,"ttl":30,"lease_id":"7","registered_at":"2026-11-22T03:10:35Z","revision":5},{"service":"web","id":"w1","address":"10.1.0.2:80","metadata":{"zone":"a","rack":"r2"},"status":"draining","weight":50,"ttl":10,"lease_id":"8","registered_at":"2026-11-22T03:10:36Z","revision":6}],"revision":9}`))
	mux.HandleFunc("GET /v1/snapshot", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(snapshotBody("bbolt file"))
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, &got
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Main(context.Background(), args, cli.Env{
		Stdout: &out, Stderr: &errOut,
		Getenv:  func(k string) string { return env[k] },
		Restore: func(cli.RestoreConfig) error { return nil },
	})
	return result{code, out.String(), errOut.String()}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cli/ -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s: output differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// TestGoldenJSON: the -w json output of every command, against a node
// answering fixed bodies. The JSON output is the API's answer, indented:
// what scripts parse.
func TestGoldenJSON(t *testing.T) {
	ts, _ := fakeRegd(t)
	env := map[string]string{"REGD_ENDPOINTS": ts.URL}
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
	}{
		{"members", []string{"members", "-w", "json"}},
		{"members-add", []string{"members", "add", "m4", "http://10.0.0.4:2380", "--learner", "-w", "json"}},
		{"members-promote", []string{"members", "promote", "fd422379fda50e48", "-w", "json"}},
		{"members-remove", []string{"members", "remove", "fd422379fda50e48", "-w", "json"}},
		{"export", []string{"export", "-w", "json"}},
		{"members-table", []string{"members"}},
		{"members-add-table", []string{"members", "add", "m4", "http://10.0.0.4:2380", "--learner"}},
		{"export-table", []string{"export"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, env, tc.args...)
			if r.code != cli.ExitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			golden(t, tc.name, r.stdout)
		})
	}
	t.Run("snapshot-save", func(t *testing.T) {
		file := filepath.Join(dir, "s.db")
		r := run(t, env, "snapshot", "save", file, "-w", "json")
		if r.code != cli.ExitOK {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		golden(t, "snapshot-save", strings.ReplaceAll(r.stdout, file, "FILE"))
		b, err := os.ReadFile(file)
		if err != nil || !bytes.Equal(b, snapshotBody("bbolt file")) {
			t.Fatalf("saved %q %v", b, err)
		}
	})
}

// TestExitCodes: 0, 1 with regd's message on stderr, 2 with the usage.
func TestExitCodes(t *testing.T) {
	ts, got := fakeRegd(t)
	env := map[string]string{"REGD_ENDPOINTS": ts.URL, "REGD_TOKEN": "a-0123456789abcdef"}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"refused removal", []string{"members", "remove", "91bc3c398fb3c146"}, cli.ExitFailed, "would leave 2 voting members of which 1 are up (HTTP 409 quorum_at_risk)"},
		{"unknown command action", []string{"members", "frobnicate"}, cli.ExitUsage, `unknown action "frobnicate"`},
		{"missing argument", []string{"members", "add", "m4"}, cli.ExitUsage, "wrong number of arguments"},
		{"unknown flag", []string{"export", "--colour"}, cli.ExitUsage, "unknown flag --colour"},
		{"bad output", []string{"export", "-w", "yaml"}, cli.ExitUsage, `-w "yaml": want table or json`},
		{"bad endpoint", []string{"export", "--endpoints", "localhost:8080"}, cli.ExitUsage, "not an http:// or https:// URL"},
		{"restore without a data dir", []string{"snapshot", "restore", "f.db"}, cli.ExitUsage, "needs --data-dir"},
		{"nothing listens", []string{"export", "--endpoints", "http://127.0.0.1:1"}, cli.ExitFailed, "connection refused"},
		{"help", []string{"members", "--help"}, cli.ExitOK, ""},
		{"help command", []string{"help", "snapshot"}, cli.ExitOK, ""},
		{"unknown help", []string{"help", "nope"}, cli.ExitUsage, `unknown command "nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, env, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", r.code, r.stderr, tc.code, tc.stderr)
			}
			if tc.code == cli.ExitUsage && !strings.Contains(r.stderr, "Usage:") && tc.name != "unknown help" {
				t.Errorf("bad usage without the usage text: %q", r.stderr)
			}
		})
	}
	if len(*got) == 0 || !strings.HasSuffix((*got)[0], "Bearer a-0123456789abcdef") {
		t.Errorf("REGD_TOKEN was not sent: %q", *got)
	}
}

// TestFailover: a node that cannot be reached is left for the next one
// in --endpoints.
func TestFailover(t *testing.T) {
	ts, _ := fakeRegd(t)
	r := run(t, nil, "members", "--endpoints", "http://127.0.0.1:1,"+ts.URL, "-w", "json")
	if r.code != cli.ExitOK || !strings.Contains(r.stdout, `"leader": "m1"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestSnapshotChecksum: a snapshot whose trailing SHA-256 does not match
// is refused, and no file is left behind.
func TestSnapshotChecksum(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := snapshotBody("bbolt file")
		w.Write(b[:len(b)-3]) // cut short
	}))
	defer ts.Close()
	file := filepath.Join(t.TempDir(), "s.db")
	r := run(t, map[string]string{"REGD_ENDPOINTS": ts.URL}, "snapshot", "save", file)
	if r.code != cli.ExitFailed || !strings.Contains(r.stderr, "checksum") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, f := range []string{file, file + ".part"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// TestBadUsage: every command's bad usage exits 2 before anything is
// sent, with one line that names the flag or argument, then the usage.
func TestBadUsage(t *testing.T) {
	ts, got := fakeRegd(t)
	env := map[string]string{"REGD_ENDPOINTS": ts.URL}
	tests := []struct {
		args []string
		line string // the first line of stderr
	}{
		{[]string{"ls", "a", "b"}, "regd ls: ls takes at most one SERVICE"},
		{[]string{"ls", "--status", "up"}, "regd ls: --status and --meta filter one service's instances: regd ls SERVICE --status ..."},
		{[]string{"ls", "web", "--status", "sleeping"}, `regd ls: --status "sleeping": want up, draining, out_of_service or any`},
		{[]string{"ls", "web", "--meta", "zone"}, `regd ls: --meta "zone": want key=value`},
		{[]string{"ls", "web", "--meta", "a=1", "--meta", "a=2"}, `regd ls: --meta "a=2": key "a" given twice`},
		{[]string{"register", "web", "w1"}, "regd register: register needs SERVICE ID ADDRESS"},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--weight", "heavy"}, `regd register: --weight "heavy": not a whole number`},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--status", "any"}, `regd register: --status "any": want up, draining, out_of_service`},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--ttl"}, "regd register: flag --ttl needs a value"},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--check-tcp", "10.0.0.1:80", "--check-http", "http://10.0.0.1/"}, "regd register: give one of --check-http, --check-tcp and --check-grpc"},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--check-interval", "5s"}, "regd register: --check-interval, --check-timeout and --check-failures need --check-http, --check-tcp or --check-grpc"},
		{[]string{"register", "web", "w1", "10.0.0.1:80", "--check-tcp", "10.0.0.1:80", "--check-failures", "x"}, `regd register: --check-failures "x": `},
		{[]string{"deregister", "web"}, "regd deregister: deregister needs SERVICE ID"},
		{[]string{"deregister", "web", "w1", "--wait", "-1s"}, "regd deregister: --wait -1s: must not be negative"},
		{[]string{"drain", "web", "w1", "--wait", "soon"}, `regd drain: --wait "soon": parse error`},
		{[]string{"undrain", "web", "w1", "w2"}, "regd undrain: undrain needs SERVICE ID"},
		{[]string{"expirations", "web"}, "regd expirations: expirations takes no arguments (--service S picks one service)"},
		{[]string{"expirations", "--limit", "-3"}, "regd expirations: --limit -3: must not be negative"},
		{[]string{"watch"}, "regd watch: watch needs one SERVICE"},
		{[]string{"watch", "web", "--exec"}, "regd watch: flag --exec needs a value"},
		{[]string{"run", "--address", "10.0.0.1:80", "--", "true"}, "regd run: --service is required"},
		{[]string{"run", "--service", "web", "true"}, "regd run: --address is required"},
		{[]string{"run", "--service", "web", "--address", "10.0.0.1:80"}, "regd run: no command to run: regd run --service S --address A -- CMD [ARGS...]"},
		{[]string{"run", "--service", "web", "--address", "10.0.0.1:80", "--drain-on-term", "-5s", "true"}, "regd run: --drain-on-term -5s: must not be negative"},
		{[]string{"run", "--service", "web", "--address", "10.0.0.1:80", "--colour", "true"}, "regd run: unknown flag --colour"},
		{[]string{"run", "--service", "web", "--address", "10.0.0.1:80", "--check-grpc", "10.0.0.1:9", "--check-tcp", "10.0.0.1:9", "true"}, "regd run: give one of --check-http, --check-tcp and --check-grpc"},
		{[]string{"ls", "--command-timeout", "0s"}, "regd ls: --command-timeout 0s: must be more than 0"},
		{[]string{"ls", "-w", "yaml"}, `regd ls: -w "yaml": want table or json`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, env, tc.args...)
			first, rest, _ := strings.Cut(r.stderr, "\n")
			if r.code != cli.ExitUsage || !strings.HasPrefix(first, tc.line) || r.stdout != "" {
				t.Fatalf("exit %d, stdout %q, first line of stderr %q; want 2 and %q", r.code, r.stdout, first, tc.line)
			}
			if !strings.HasPrefix(rest, "\nUsage:\n  regd "+tc.args[0]) {
				t.Errorf("the line is not followed by the command's usage: %q", rest)
			}
		})
	}
	if len(*got) != 0 {
		t.Errorf("bad usage sent requests: %q", *got)
	}
}

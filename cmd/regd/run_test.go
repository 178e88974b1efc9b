package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// runArgs calls run the way main does, in a fresh working directory so that
// a run that wrongly got as far as starting would leave visible traces.
func runArgs(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Chdir(t.TempDir())
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Errorf("run %q created %v", args, entries)
	}
	return code, out.String(), errb.String()
}

// TestRunExits covers the paths of run that end before anything starts: they
// need no etcd, so they run with -short too. The real process is covered by
// the e2e tests.
func TestRunExits(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		stdout     string // stdout starts with this
		stderrLine string // stderr is exactly one line containing this; "" means empty
	}{
		{name: "version", args: []string{"--version"}, code: exitOK, stdout: "regd "},
		{name: "version despite a bad env", args: []string{"--version"}, env: map[string]string{"REGD_HTTP_ADDR": "bad"}, code: exitOK, stdout: "regd "},
		{name: "help", args: []string{"--help"}, code: exitOK, stdout: "Usage: regd"},
		{name: "bad flag value", args: []string{"--log-level", "loud"}, code: exitUsage, stderrLine: `--log-level "loud"`},
		{name: "unknown flag", args: []string{"--nope"}, code: exitUsage, stderrLine: "nope"},
		{name: "bad env", env: map[string]string{"REGD_INITIAL_CLUSTER_STATE": "old"}, code: exitUsage, stderrLine: "REGD_INITIAL_CLUSTER_STATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.env, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if !strings.HasPrefix(stdout, tt.stdout) || (tt.stdout == "" && stdout != "") {
				t.Errorf("stdout %q, want it to start with %q", stdout, tt.stdout)
			}
			if tt.stderrLine == "" {
				if stderr != "" {
					t.Errorf("stderr %q, want nothing", stderr)
				}
				return
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "regd: ") || !strings.HasSuffix(stderr, "\n") || !strings.Contains(stderr, tt.stderrLine) {
				t.Errorf("stderr %q, want one line starting %q that mentions %q", stderr, "regd: ", tt.stderrLine)
			}
		})
	}
}

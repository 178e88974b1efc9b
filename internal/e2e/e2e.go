// Package e2e runs the real regd binary as a separate process for end-to-end
// tests: it builds the binary once per test binary, starts processes with
// their output captured, polls them until ready, signals them and waits for
// their exit code. Every process a test starts is killed when the test ends.
//
// It is a test helper, used only by `//go:build e2e` tests; it imports
// nothing of regd so that those tests exercise the binary and nothing else.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/regd/regd/internal/freeport"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Main runs the tests and then removes the binary Build made. Call it from
// TestMain: `func TestMain(m *testing.M) { e2e.Main(m) }`.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Build compiles ./cmd/regd of the enclosing module once per test binary and
// returns the binary's path. It is a plain build (no -race): the binary is the
// thing under test, and the race detector belongs to the tests' own process.
// VCS stamping is off because it fails in checkouts owned by another user
// (CI containers) and the version string does not matter here.
func Build(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			build.err = err
			return
		}
		if build.dir, err = os.MkdirTemp("", "regd-e2e-"); err != nil {
			build.err = err
			return
		}
		bin := filepath.Join(build.dir, "regd")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/regd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/regd: %v\n%s", err, out)
			return
		}
		build.bin = bin
	})
	if build.err != nil {
		tb.Fatalf("e2e: %v", build.err)
	}
	return build.bin
}

// ModuleRoot is the directory of the go.mod that encloses the current
// directory (go test runs tests in their package's directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// CleanEnv is the test's environment without any REGD_* variable, so that a
// developer's shell cannot change what a test runs, plus extra ("K=V").
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// Proc is one running (or exited) regd process.
type Proc struct {
	tb     testing.TB
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	state  *os.ProcessState
}

// Start runs bin with args in dir, with CleanEnv as its environment.
func Start(tb testing.TB, bin, dir string, args ...string) *Proc {
	tb.Helper()
	return StartEnv(tb, bin, dir, CleanEnv(), args...)
}

// StartEnv runs bin with args in dir and exactly env as its environment. The
// process is killed, if still running, when the test ends; its stderr is
// logged then if the test failed.
func StartEnv(tb testing.TB, bin, dir string, env []string, args ...string) *Proc {
	tb.Helper()
	p := &Proc{tb: tb, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	// Output is copied through pipes; don't let a stuck pipe hold Wait.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.cmd.Wait() //nolint:errcheck // the exit status is read from ProcessState
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() //nolint:errcheck // it may exit meanwhile
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				tb.Errorf("regd pid %d did not die after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if tb.Failed() {
			tb.Logf("regd %s (pid %d) stderr:\n%s", strings.Join(args, " "), p.cmd.Process.Pid, p.Stderr())
		}
	})
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdout is everything the process wrote to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr is everything the process wrote to stderr so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.tb.Fatalf("signal %v to pid %d: %v", sig, p.Pid(), err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code: -1 when a signal killed it. The test fails at once on timeout.
func (p *Proc) Wait(timeout time.Duration) int {
	p.tb.Helper()
	code, ok := p.WaitExit(timeout)
	if !ok {
		p.tb.Fatalf("regd pid %d did not exit within %v", p.Pid(), timeout)
	}
	return code
}

// WaitExit is Wait without failing: ok is false on timeout.
func (p *Proc) WaitExit(timeout time.Duration) (code int, ok bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return 0, false
	}
	return p.exitCode(), true
}

// exitCode is the exit code of the exited process, -1 if a signal killed it.
func (p *Proc) exitCode() int {
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1
	}
	return p.state.ExitCode()
}

// WaitReady polls baseURL+"/readyz" until it answers 200. The test fails if
// the process exits first or timeout passes.
func (p *Proc) WaitReady(baseURL string, timeout time.Duration) {
	p.tb.Helper()
	if err := p.waitReady(baseURL, timeout); err != nil {
		p.tb.Fatal(err)
	}
}

func (p *Proc) waitReady(baseURL string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		resp, err := c.Get(baseURL + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // draining only
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("regd pid %d not ready at %s within %v: %s", p.Pid(), baseURL, timeout, last)
		}
		select {
		case <-p.done:
			return &exitedError{code: p.exitCode(), stderr: p.Stderr()}
		case <-tick.C:
		}
	}
}

type exitedError struct {
	code   int
	stderr string
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("regd exited with code %d before it was ready", e.code)
}

// Node is the set of addresses and the data dir one test node runs with.
type Node struct {
	HTTPAddr  string // host:port of the REST API
	ClientURL string // etcd client URL
	PeerURL   string // etcd peer URL
	DNSAddr   string // host:port of DNS, UDP and TCP
	DataDir   string
}

// NewNode reserves free loopback ports for a node and a data dir under the
// test's temp dir.
func NewNode(tb testing.TB) Node {
	tb.Helper()
	return Node{
		HTTPAddr:  fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(tb)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(tb)),
		DNSAddr:   fmt.Sprintf("127.0.0.1:%d", FreePort(tb)),
		DataDir:   filepath.Join(tb.TempDir(), "data"),
	}
}

// Args are the flags that make regd use n's ports and data dir, so that it
// never touches the default ports of a dev-mode regd.
func (n Node) Args() []string {
	return []string{
		"--http-addr", n.HTTPAddr,
		"--listen-client-urls", n.ClientURL,
		"--advertise-client-urls", n.ClientURL,
		"--listen-peer-urls", n.PeerURL,
		"--initial-advertise-peer-urls", n.PeerURL,
		"--dns-addr", n.DNSAddr,
		"--data-dir", n.DataDir,
	}
}

// URL is the REST API's base URL.
func (n Node) URL() string { return "http://" + n.HTTPAddr }

// StartNode starts a node on free ports in dir with env and extra flags
// (which must not override the ports) and waits until it is ready. A port
// reserved by FreePort can be taken by some other process before regd binds
// it; then regd exits 2 saying it cannot listen, and StartNode retries with
// fresh ports, as Consul's test agent does.
func StartNode(tb testing.TB, bin, dir string, env []string, extra ...string) (*Proc, Node) {
	tb.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		n := NewNode(tb)
		p := StartEnv(tb, bin, dir, env, append(n.Args(), extra...)...)
		err := p.waitReady(n.URL(), 30*time.Second)
		if err == nil {
			return p, n
		}
		if ee, ok := err.(*exitedError); ok && ee.code == 2 && strings.Contains(ee.stderr, "cannot listen") && i < attempts {
			tb.Logf("port clash, retrying: %s", strings.TrimSpace(ee.stderr))
			continue
		}
		tb.Fatal(err)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago and that
// this test binary has not handed out before.
func FreePort(tb testing.TB) int {
	tb.Helper()
	return freeport.Port(tb)
}

// Resp is an HTTP response with its body read.
type Resp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v; the test fails if it is not JSON.
func (r Resp) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %q: %v", r.Body, err)
	}
}

var client = &http.Client{Timeout: 15 * time.Second}

// Do sends one request with body as JSON (none when empty) and reads the
// whole answer; a transport error fails the test.
func Do(tb testing.TB, method, url, body string) Resp {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return Resp{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// LogLine is one JSON log line; Raw is the line as written.
type LogLine struct {
	Level  string `json:"level"`
	Logger string `json:"logger"`
	Msg    string `json:"msg"`
	Raw    string `json:"-"`
}

// ParseLogs splits stderr into JSON log lines and the lines that are not JSON.
func ParseLogs(stderr string) (logs []LogLine, other []string) {
	for _, line := range strings.Split(stderr, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var l LogLine
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Level == "" {
			other = append(other, line)
			continue
		}
		l.Raw = line
		logs = append(logs, l)
	}
	return logs, other
}

// ExitCodeString describes an exit code for failure messages.
func ExitCodeString(code int) string {
	if code == -1 {
		return "killed by a signal"
	}
	return "exit " + strconv.Itoa(code)
}

// syncBuffer is a bytes.Buffer safe for the copying goroutine of os/exec
// and the test reading it at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

//go:build e2e

package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
)

// streamRecorder keeps the events of one SSE stream, as "type id-of-instance
// status" lines.
type streamRecorder struct {
	mu     sync.Mutex
	events []string
}

func (s *streamRecorder) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

// record follows url's event stream until the test ends.
func record(t *testing.T, url string) *streamRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: %v %v", url, resp, err)
	}
	rec := &streamRecorder{}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var typ string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				var in struct{ ID, Status string }
				_ = json.Unmarshal([]byte(line[6:]), &in)
				rec.mu.Lock()
				rec.events = append(rec.events, strings.TrimSpace(typ+" "+in.ID+" "+in.Status))
				rec.mu.Unlock()
			}
		}
	}()
	return rec
}

// waitFile waits until dir/name exists and returns its content.
func waitFile(t *testing.T, dir, name string, timeout time.Duration) string {
	t.Helper()
	var b []byte
	e2e.Eventually(t, timeout, name, func() (err error) {
		b, err = os.ReadFile(filepath.Join(dir, name))
		return err
	})
	return string(b)
}

// processGone reports whether pid has exited (gone, or a zombie nobody
// reaped yet).
func processGone(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// TestE2ERun: `regd run` with the real binary and real processes. A
// command that exits 0 or 7: the instance was registered while it ran,
// regd run exits with its code, the instance is deregistered at once. A
// command killed by the SIGTERM regd run passes on: exit 143. SIGHUP and
// SIGINT passed on; SIGTERM with --drain-on-term: the command's TERM trap
// finds its instance draining, the handshake counted the test's watch
// stream, which saw register, update (draining), deregister. regd run
// SIGKILLed: its command gets SIGTERM (Linux), the instance expires once.
// No other instance of these runs was ever reported expired: after a
// marker's expiry (registered last, with the same TTL), the only report
// of service job is the SIGKILLed one.
func TestE2ERun(t *testing.T) {
	bin := e2e.Build(t)
	_, n := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv())
	dir := t.TempDir()
	env := e2e.CleanEnv("REGD_ENDPOINTS="+n.URL(), "CLI_BIN="+bin)
	start := func(args ...string) *e2e.Proc {
		t.Helper()
		return e2e.StartEnv(t, bin, dir, env, append([]string{"run", "--service", "job", "--address", "10.0.0.9:80", "--ttl", "2"}, args...)...)
	}
	status := func(id string) int {
		t.Helper()
		return e2e.Do(t, http.MethodGet, n.URL()+"/v1/services/job/instances/"+id, "").Status
	}
	stream := record(t, n.URL()+"/v1/services/job/watch?status=any")

	for _, code := range []int{0, 7} {
		id := fmt.Sprintf("exit%d", code)
		p := start("--id", id, "--", "sh", "-c", fmt.Sprintf(`"$CLI_BIN" ls job -w json > %s.json; exit %d`, id, code))
		if got := p.Wait(30 * time.Second); got != code {
			t.Fatalf("regd run of a command that exits %d: exit %d; stderr:\n%s", code, got, p.Stderr())
		}
		if seen := waitFile(t, dir, id+".json", time.Second); !strings.Contains(seen, `"id": "`+id+`"`) {
			t.Errorf("the command did not find %s registered while it ran: %s", id, seen)
		}
		if s := status(id); s != http.StatusNotFound {
			t.Errorf("%s after regd run exited: GET %d, want 404 (deregistered)", id, s)
		}
	}

	p := start("--id", "term", "--", "sh", "-c", `echo $$ > term.pid; exec sleep 60`)
	waitFile(t, dir, "term.pid", 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if got := p.Wait(30 * time.Second); got != 128+int(syscall.SIGTERM) {
		t.Fatalf("regd run whose command died of the SIGTERM passed on: exit %d, want 143; stderr:\n%s", got, p.Stderr())
	}
	if s := status("term"); s != http.StatusNotFound {
		t.Errorf("term after regd run exited: GET %d, want 404", s)
	}

	// HUP and INT are passed on; TERM drains first (the test's stream is
	// the service's subscriber), then is passed on.
	script := `trap 'echo HUP >> signals' HUP
trap 'echo INT >> signals' INT
trap '"$CLI_BIN" ls job --status any -w json > atterm.json; echo TERM >> signals; exit 3' TERM
touch ready
while :; do sleep 0.1; done`
	p = start("--id", "drained", "--drain-on-term", "10s", "--", "sh", "-c", script)
	waitFile(t, dir, "ready", 10*time.Second)
	for _, sig := range []struct {
		sig  syscall.Signal
		name string
	}{{syscall.SIGHUP, "HUP"}, {syscall.SIGINT, "INT"}} {
		p.Signal(sig.sig)
		name := sig.name
		e2e.Eventually(t, 10*time.Second, name+" passed on", func() error {
			if got, err := os.ReadFile(filepath.Join(dir, "signals")); err != nil || !strings.HasSuffix(string(got), name+"\n") {
				return fmt.Errorf("signals %q %v", got, err)
			}
			return nil
		})
	}
	p.Signal(syscall.SIGTERM)
	if got := p.Wait(30 * time.Second); got != 3 {
		t.Fatalf("regd run whose command exits 3 on SIGTERM: exit %d; stderr:\n%s", got, p.Stderr())
	}
	if got := waitFile(t, dir, "signals", time.Second); got != "HUP\nINT\nTERM\n" {
		t.Errorf("the command got %q, want each of HUP, INT, TERM once", got)
	}
	if at := waitFile(t, dir, "atterm.json", time.Second); !strings.Contains(at, `"status": "draining"`) {
		t.Errorf("at SIGTERM the command found its instance not drained: %s", at)
	}
	if !strings.Contains(p.Stderr(), "drained job/drained: 1/1 subscribers, 1/1 members had it; passing SIGTERM on") {
		t.Errorf("regd run did not report a complete handshake before SIGTERM:\n%s", p.Stderr())
	}
	e2e.Eventually(t, 10*time.Second, "the drained instance's events", func() error {
		var got []string
		for _, l := range stream.lines() {
			if strings.HasPrefix(l, "register drained") || strings.Contains(l, " drained ") {
				got = append(got, l)
			}
		}
		if strings.Join(got, "; ") != "register drained up; update drained draining; deregister drained draining" {
			return fmt.Errorf("events of drained: %q", got)
		}
		return nil
	})

	// regd run dies without a word: the command is told (Linux), and the
	// instance expires, once.
	p = start("--id", "killed", "--", "sh", "-c", `echo $$ > killed.pid; exec sleep 60`)
	pid := strings.TrimSpace(waitFile(t, dir, "killed.pid", 10*time.Second))
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	e2e.Eventually(t, 10*time.Second, "the command of a killed regd run ends", func() error {
		if !processGone(pid) {
			return fmt.Errorf("pid %s still runs", pid)
		}
		return nil
	})
	e2e.Eventually(t, 20*time.Second, "the expiry of job/killed", func() error {
		if exps := expirations(t, n.URL()); len(exps) == 0 {
			return fmt.Errorf("no expiry reported yet")
		}
		return nil
	})
	if code, _, errOut := regd(t, bin, "", "register", "marker", "m1", "10.0.0.1:1", "--ttl", "2", "--endpoints", n.URL()); code != 0 {
		t.Fatalf("register the marker: %s", errOut)
	}
	e2e.Eventually(t, 20*time.Second, "the marker's expiry", func() error {
		for _, x := range expirations(t, n.URL()) {
			if x.Service == "marker" {
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	var got []string
	for _, x := range expirations(t, n.URL()) {
		got = append(got, x.Service+"/"+x.ID)
	}
	if strings.Join(got, " ") != "marker/m1 job/killed" {
		t.Errorf("expiry reports %v, want the marker's and job/killed's, once each", got)
	}
}

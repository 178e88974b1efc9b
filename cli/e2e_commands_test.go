//go:build e2e

package cli_test

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/poll"
)

// normalise replaces what differs from run to run in the commands' JSON
// output (revisions, lease ids, times, event ids) with placeholders.
func normalise(s string) string {
	for _, r := range []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`(?m)^(list|reset|register|update|deregister|expire) +\d+(\.\d+)? +`), "$1 <event-id> "}, // and the padding, which follows the ids' width
		{regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b`), "<time>"},
		{regexp.MustCompile(`("revision": ?)\d+`), `$1<rev>`},
		{regexp.MustCompile(`("lease_id": ?)"\d+"`), `$1"<lease>"`},
		{regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"`), `"<time>"`},
		{regexp.MustCompile(`("id": ?)"\d+(\.\d+)?"`), `$1"<event-id>"`},
		// A deadline is there only when the leader sampled the lease in
		// time (docs/api.md, "Expirations"): not something to pin.
		{regexp.MustCompile(`(?m)^ *"deadline": ?"[^"]*",\n`), ""},
	} {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}

// TestE2ECommands: the request commands of the real binary against a real
// node, their -w json output against golden files (revisions, lease ids,
// times and event ids normalised): register, ls (services, one service,
// filters), drain with the handshake observed by a `regd watch -w json`
// running beside, undrain, deregister, expirations; the watch's own
// events; and the failures a script must tell apart (exit 1 with regd's
// message).
func TestE2ECommands(t *testing.T) {
	bin := e2e.Build(t)
	_, n := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv())
	ep := "--endpoints=" + n.URL()
	cli := func(args ...string) string {
		t.Helper()
		code, out, errOut := regd(t, bin, "", append(args, ep)...)
		if code != 0 {
			t.Fatalf("regd %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}

	// A watch first, so that it sees every change below; its first line is
	// the (empty) list it starts from.
	watch := e2e.StartEnv(t, bin, t.TempDir(), e2e.CleanEnv(), "watch", "web", "-w", "json", ep)
	watchTable := e2e.StartEnv(t, bin, t.TempDir(), e2e.CleanEnv(), "watch", "web", ep)
	poll.Until(t, 10*time.Second, "the watches' first list", func() error {
		if !strings.Contains(watch.Stdout(), `"event":"list"`) || !strings.HasPrefix(watchTable.Stdout(), "list ") {
			return fmt.Errorf("stdout %q and %q, stderr %q and %q", watch.Stdout(), watchTable.Stdout(), watch.Stderr(), watchTable.Stderr())
		}
		return nil
	})

	golden(t, "e2e-register", normalise(cli("register", "web", "w1", "10.0.0.1:80", "--ttl", "60", "--meta", "zone=a", "-w", "json")))
	cli("register", "web", "w2", "10.0.0.2:80", "--ttl", "60", "--weight", "0", "--status", "out_of_service", "--meta", "zone=b")
	cli("register", "web", "w3", "10.0.0.3:80", "--ttl", "60", "--meta", "zone=b")
	cli("register", "db", "d1", "10.0.1.1:5432", "--ttl", "60")
	golden(t, "e2e-ls", normalise(cli("ls", "-w", "json")))
	golden(t, "e2e-ls-web", normalise(cli("ls", "web", "-w", "json")))
	golden(t, "e2e-ls-web-filtered", normalise(cli("ls", "web", "--status", "any", "--meta", "zone=b", "-w", "json")))
	golden(t, "e2e-ls-table", normalise(cli("ls")+cli("ls", "web", "--status", "any")))
	// The watch's stream is the one subscriber of web: the drain's
	// handshake waits until it has been sent the change.
	golden(t, "e2e-drain", normalise(cli("drain", "web", "w1", "--wait", "10s", "-w", "json")))
	golden(t, "e2e-undrain", normalise(cli("undrain", "web", "w1", "-w", "json")))
	golden(t, "e2e-deregister", normalise(cli("deregister", "web", "w3", "--wait", "10s", "-w", "json")))

	// An instance nobody heartbeats expires, and is reported.
	cli("register", "gone", "g1", "10.0.2.1:80", "--ttl", "2")
	poll.Until(t, 20*time.Second, "the expiry of gone/g1", func() error {
		if out := cli("expirations", "--service", "gone", "-w", "json"); !strings.Contains(out, `"g1"`) {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	golden(t, "e2e-expirations", normalise(cli("expirations", "--service", "gone", "--limit", "5", "-w", "json")))
	golden(t, "e2e-expirations-table", normalise(cli("expirations", "--service", "gone")))

	// What a script must tell apart: exit 1 and regd's own message.
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"deregister", "web", "w3"}, `regd deregister: instance "w3" of service "web" is not registered`},
		{[]string{"drain", "web", "nope"}, "(HTTP 404 not_found)"},
		{[]string{"register", "web", "w4", "10.0.0.4"}, "(HTTP 400 invalid_address)"},
		{[]string{"register", "web", "w4", "10.0.0.4:80", "--ttl", "1"}, "(HTTP 400 "},
		{[]string{"register", "web", "w4", "10.0.0.4:80", "--check-tcp", "10.0.0.4:80", "--check-interval", "500ms"}, "(HTTP 400 invalid_check)"},
		{[]string{"ls", "bad/name"}, "regd ls: "},
	} {
		code, out, errOut := regd(t, bin, "", append(tc.args, ep)...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.stderr) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("regd %s: exit %d, stdout %q, stderr %q; want 1 and one line with %q", strings.Join(tc.args, " "), code, out, errOut, tc.stderr)
		}
	}
	// Nothing listens: exit 1 at once (well within --command-timeout),
	// not retried until it ends.
	began := time.Now()
	code, _, errOut := regd(t, bin, "", "ls", "--endpoints", "http://127.0.0.1:1", "--command-timeout", "60s")
	if code != 1 || !strings.Contains(errOut, "connection refused") || time.Since(began) > 30*time.Second {
		t.Errorf("ls with nothing listening: exit %d after %v, stderr %q; want 1 with connection refused", code, time.Since(began), errOut)
	}

	// The watch saw each change of web once, in order; w2 never, as it was
	// not up. SIGINT ends it with exit 0.
	poll.Until(t, 10*time.Second, "the deregistration in the watches", func() error {
		if !strings.Contains(watch.Stdout(), `"event":"deregister"`) || !strings.Contains(watchTable.Stdout(), "deregister ") {
			return fmt.Errorf("stdout %q and %q", watch.Stdout(), watchTable.Stdout())
		}
		return nil
	})
	for _, w := range []*e2e.Proc{watch, watchTable} {
		w.Signal(syscall.SIGINT)
		if code := w.Wait(10 * time.Second); code != 0 {
			t.Errorf("watch after SIGINT: exit %d, stderr %q", code, w.Stderr())
		}
	}
	golden(t, "e2e-watch", normalise(watch.Stdout()))
	golden(t, "e2e-watch-table", normalise(watchTable.Stdout()))
	if got := e2e.Do(t, http.MethodGet, n.URL()+"/v1/services/web/instances/w3", ""); got.Status != http.StatusNotFound {
		t.Errorf("w3 after deregister: %d %s", got.Status, got.Body)
	}

	// An instance regd checks: no heartbeats; kept while the TCP check
	// passes, removed and reported with cause check_failed once the port
	// closes (one failure allowed).
	backend := checktest.NewTCP(t)
	addr := backend.Addr()
	out := cli("register", "pg", "p1", addr, "--check-tcp", addr, "--check-interval", "1s", "--check-timeout", "500ms", "--check-failures", "1", "-w", "json")
	if !strings.Contains(out, `"tcp": "`+addr+`"`) || !strings.Contains(out, `"interval": "1s"`) {
		t.Errorf("register --check-tcp answered %s; want the check", out)
	}
	poll.Until(t, 20*time.Second, "pg/p1's first passing probe", func() error {
		if out := cli("ls", "pg", "-w", "json"); !strings.Contains(out, `"passing"`) {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	backend.Down()
	poll.Until(t, 30*time.Second, "pg/p1 reported with cause check_failed", func() error {
		if out := cli("expirations", "--service", "pg", "-w", "json"); !strings.Contains(out, `"check_failed"`) {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
}

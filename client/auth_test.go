package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/internal/syncbuf"
)

// The tokens of the clusters started by authCluster.
const (
	writeToken = "test-write-4f1c9a7e2b8d6053"
	readToken  = "test-read-9e0b3d5a7c1f2468"
	wrongToken = "test-none-0000111122223333"
)

var testTokens = []api.Token{
	{Scope: api.ScopeWrite, Secret: writeToken},
	{Scope: api.ScopeRead, Secret: readToken},
}

// authCluster starts a one-member cluster that checks tokens (reads too,
// with tokenReads), and returns its Auth to change them.
func authCluster(t *testing.T, tokenReads bool) (*regdtest.Cluster, *api.Auth) {
	t.Helper()
	auth := api.NewAuth(testTokens, tokenReads)
	return regdtest.StartCluster(t, 1, regdtest.Options{Auth: auth}), auth
}

// doToken is regdtest.Do with a bearer token ("": none).
func doToken(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	status, _, out := regdtest.DoToken(t, method, url, token, body)
	return status, out
}

func listWithToken(t *testing.T, m *regdtest.Member, service string) map[string]client.Instance {
	t.Helper()
	return listAs(t, m, service, readToken)
}

func registerWithToken(t *testing.T, m *regdtest.Member, service, id string) {
	t.Helper()
	status, body := doToken(t, http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id), writeToken,
		map[string]any{"address": "10.3.0.1:80", "ttl": 60})
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("register %s/%s: %d %s", service, id, status, body)
	}
}

// logCapture is a client logger whose output the test reads (and shows
// with REGD_CLIENT_LOG, like logger).
type logCapture struct{ buf syncbuf.Buffer }

func (l *logCapture) Write(p []byte) (int, error) {
	if os.Getenv("REGD_CLIENT_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logCapture) String() string { return l.buf.String() }

// count is how many lines the client logged with message msg.
func (l *logCapture) count(msg string) int {
	return strings.Count(l.String(), `msg="`+msg+`"`)
}

// waitMore waits until the client has logged msg n more times than it had
// when it was counted as from: the positive marker that it went through
// n more rounds of what the line reports.
func (l *logCapture) waitMore(t *testing.T, msg string, from, n int) {
	t.Helper()
	poll.Until(t, 20*time.Second, fmt.Sprintf("%d more %q lines", n, msg), func() error {
		if got := l.count(msg) - from; got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func (l *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// noSecrets fails if a token shows in the logs or in an error.
func noSecrets(t *testing.T, logs string, errs ...error) {
	t.Helper()
	for _, tok := range []string{writeToken, readToken, wrongToken} {
		if strings.Contains(logs, tok) {
			t.Errorf("a token is in the client's log:\n%s", logs)
		}
		for _, err := range errs {
			if err != nil && strings.Contains(err.Error(), tok) {
				t.Errorf("a token is in an error: %v", err)
			}
		}
	}
}

// deadAddr is a loopback address nothing listens on: a client that moved
// to it would see connection refused.
func deadAddr(t *testing.T) string { return freeport.Addr(t) }

func TestRegistrarToken(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c, _ := authCluster(t, true)
	m := c.Members[0]
	var logs logCapture
	// The newline a token read from a file ends with is ignored.
	cfg := client.Config{Addrs: []string{m.HTTPAddr}, Token: writeToken + "\n", Logger: logs.logger()}
	r := client.NewRegistrar(cfg, "web", "w1", "10.0.0.1:8080", client.RegistrarOptions{TTL: 2})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start with a write token: %v", err)
	}
	in, ok := listWithToken(t, m, "web")["w1"]
	if !ok {
		t.Fatal("not listed after Start")
	}
	// Heartbeats (writes: they need the token too) keep a TTL-2 instance
	// on the same lease for 5 s.
	poll.Throughout(t, 5*time.Second, "the registrar keeps w1 on its lease", func() error {
		got, ok := listWithToken(t, m, "web")["w1"]
		if !ok || got.LeaseID != in.LeaseID {
			return fmt.Errorf("instance gone or re-registered although the registrar heartbeats: %+v %v (Err %v)", got, ok, r.Err())
		}
		return nil
	})
	if err := r.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, ok := listWithToken(t, m, "web")["w1"]; ok {
		t.Fatal("still listed after Close")
	}
	noSecrets(t, logs.String())
}

// TestRegistrarTokenRefused: without a token, with a read token or with a
// token regd does not know, Start fails at once with the 401 or 403; the
// second, dead node in Addrs is never tried.
func TestRegistrarTokenRefused(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c, _ := authCluster(t, false)
	m := c.Members[0]
	dead := deadAddr(t)
	for _, tc := range []struct {
		name, token string
		status      int
		word        string
	}{
		{"no token", "", http.StatusUnauthorized, "unauthorized"},
		{"read token", readToken, http.StatusForbidden, "forbidden"},
		{"wrong token", wrongToken, http.StatusUnauthorized, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logCapture
			cfg := client.Config{Addrs: []string{m.HTTPAddr, dead}, Token: tc.token, Logger: logs.logger()}
			r := client.NewRegistrar(cfg, "web", "w-"+strings.ReplaceAll(tc.name, " ", "-"), "10.0.0.1:8080", client.RegistrarOptions{})
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			began := time.Now()
			err := r.Start(ctx)
			took := time.Since(began)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tc.status || !client.IsAuthError(err) {
				t.Fatalf("Start = %v, want an HTTP %d APIError", err, tc.status)
			}
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(tc.status)) || !strings.Contains(msg, tc.word) {
				t.Errorf("error %q does not say %d %s", msg, tc.status, tc.word)
			}
			if took > 5*time.Second {
				t.Errorf("Start took %s: the refusal was retried", took)
			}
			if strings.Contains(logs.String(), "switching node") {
				t.Errorf("the client moved to another node after a %d:\n%s", tc.status, logs.String())
			}
			if got := r.Err(); !client.IsAuthError(got) {
				t.Errorf("Err() = %v, want the refusal", got)
			}
			// Close's deregistration is refused the same way, at once.
			began = time.Now()
			cerr := r.Close(ctx)
			if cerr != nil && !client.IsAuthError(cerr) {
				t.Errorf("Close = %v, want nil or the refusal", cerr)
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("Close took %s", took)
			}
			noSecrets(t, logs.String(), err, cerr)
		})
	}
	if got := listWithToken(t, m, "web"); len(got) != 0 {
		t.Errorf("registered although refused: %v", got)
	}

	// A token that cannot be sent fails at once, without repeating it.
	r := client.NewRegistrar(client.Config{Addrs: []string{m.HTTPAddr}, Token: "not a token " + wrongToken},
		"web", "bad", "10.0.0.1:8080", client.RegistrarOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := r.Start(ctx)
	if !errors.Is(err, client.ErrBadToken) || ctx.Err() != nil {
		t.Fatalf("Start with spaces in the token = %v, want ErrBadToken at once", err)
	}
	noSecrets(t, "", err)
}

// TestRegistrarTokenRevoked: the registrar's token is revoked while it
// heartbeats. Err reports the 403, the registrar neither moves to the dead
// second node nor registers again, and it recovers once the token is back.
func TestRegistrarTokenRevoked(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c, auth := authCluster(t, false)
	m := c.Members[0]
	var logs logCapture
	cfg := client.Config{Addrs: []string{m.HTTPAddr, deadAddr(t)}, Token: writeToken, Logger: logs.logger()}
	// TTL 6: heartbeats every 2 s, and the lease outlives a short outage.
	r := client.NewRegistrar(cfg, "web", "w1", "10.0.0.1:8080", client.RegistrarOptions{TTL: 6})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer r.Close(ctx)

	// Demote the token to read.
	auth.SetTokens([]api.Token{{Scope: api.ScopeRead, Secret: writeToken}})
	poll.Until(t, 10*time.Second, "the registrar's Err reports the refusal", func() error {
		if err := r.Err(); !client.IsAuthError(err) {
			return fmt.Errorf("Err() = %v", err)
		}
		return nil
	})
	if err := r.Err(); !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("Err() = %v, want the 403 forbidden", err)
	}
	// Two more heartbeats, both refused (the positive marker): still the
	// refusal (not a connection error from the dead node), no failover,
	// no re-registration.
	logs.waitMore(t, "regd: heartbeat failed", logs.count("regd: heartbeat failed"), 2)
	if err := r.Err(); !client.IsAuthError(err) {
		t.Fatalf("Err() = %v: the registrar moved on after the refusal", err)
	}
	if l := logs.String(); strings.Contains(l, "switching node") || strings.Contains(l, "registering again") {
		t.Errorf("the refusal was handled as a transient failure:\n%s", l)
	}

	auth.SetTokens(testTokens)
	poll.Until(t, 10*time.Second, "the registrar recovers once the token is back", func() error {
		if err := r.Err(); err != nil {
			return fmt.Errorf("Err() = %v", err)
		}
		return nil
	})
	if _, ok := listWithToken(t, m, "web")["w1"]; !ok {
		t.Error("not listed after the token was restored")
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	noSecrets(t, logs.String())
}

// TestDiscoveryToken: with --auth-reads token, a read token lists and
// watches; no token or an unknown one fails Start at once.
func TestDiscoveryToken(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c, _ := authCluster(t, true)
	m := c.Members[0]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	registerWithToken(t, m, "api", "early")

	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"wrong token", wrongToken}} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logCapture
			d := client.NewDiscovery(client.Config{Addrs: []string{m.HTTPAddr, deadAddr(t)}, Token: tc.token, Logger: logs.logger()}, "api")
			began := time.Now()
			err := d.Start(ctx)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || !client.IsAuthError(err) {
				t.Fatalf("Start = %v, want an HTTP 401 APIError", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "401") || !strings.Contains(msg, "unauthorized") {
				t.Errorf("error %q does not say 401 unauthorized", msg)
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("Start took %s: the refusal was retried", took)
			}
			d.Close()
			noSecrets(t, logs.String(), err)
		})
	}

	var logs logCapture
	d := client.NewDiscovery(client.Config{Addrs: []string{m.HTTPAddr}, Token: readToken, Logger: logs.logger()}, "api")
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start with a read token: %v", err)
	}
	defer d.Close()
	if rec.registered("early") != 1 {
		t.Fatalf("initial list: %v", d.Instances())
	}
	// The watch stream is a read too: events arrive only if it has the token.
	registerWithToken(t, m, "api", "a")
	poll.Until(t, 10*time.Second, "the register event for a", func() error {
		if rec.registered("a") != 1 {
			return fmt.Errorf("no register event for a (Err %v)", d.Err())
		}
		return nil
	})
	if status, body := doToken(t, http.MethodDelete, m.URL("/v1/services/api/instances/a"), writeToken, nil); status != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", status, body)
	}
	poll.Until(t, 10*time.Second, "OnDeregister(a) for the deregistration", func() error {
		if got := rec.reasons("a"); len(got) != 1 || got[0] != client.ReasonDeregister {
			return fmt.Errorf("OnDeregister(a) reasons %v", got)
		}
		return nil
	})
	if err := d.Err(); err != nil {
		t.Errorf("Err() = %v", err)
	}
	d.Close()
	noSecrets(t, logs.String())
}

// TestDiscoveryTokenRevoked: the read token is revoked and the watch's
// node restarts. The new stream's 401 is kept in Err, the discovery stays
// on that node (not the dead second one), and it resumes without loss once
// the token is back.
func TestDiscoveryTokenRevoked(t *testing.T) {
	skipShort(t)
	client.SetAuthRetryDelay(time.Second) // before t.Parallel: nothing else runs
	t.Parallel()
	c, auth := authCluster(t, true)
	m := c.Members[0]
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var logs logCapture
	d := client.NewDiscovery(client.Config{Addrs: []string{m.HTTPAddr, deadAddr(t)}, Token: readToken, Logger: logs.logger()}, "api")
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer d.Close()
	registerWithToken(t, m, "api", "before")
	poll.Until(t, 10*time.Second, "the first event", func() error {
		if rec.registered("before") != 1 {
			return fmt.Errorf("no event yet")
		}
		return nil
	})

	auth.SetTokens(testTokens[:1]) // the write token only
	c.Stop(0)                      // ends the stream; a new one needs the token
	c.Restart(0)
	registerWithToken(t, m, "api", "during")
	poll.Until(t, 30*time.Second, "the watch's Err reports the refusal", func() error {
		if err := d.Err(); !client.IsAuthError(err) {
			return fmt.Errorf("Err() = %v", err)
		}
		return nil
	})
	// Two more refused attempts on this node (the positive marker), and
	// no move to the next node in between.
	moved := logs.count("regd: watch stream ended; resuming on the next node")
	logs.waitMore(t, "regd: watch refused: check the token", logs.count("regd: watch refused: check the token"), 2)
	if err := d.Err(); !client.IsAuthError(err) {
		t.Fatalf("Err() = %v: the watch moved on after the refusal", err)
	}
	if n := logs.count("regd: watch stream ended; resuming on the next node"); n != moved {
		t.Fatalf("the watch moved to the next node %d times after the refusal", n-moved)
	}
	if err := d.Err(); !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("Err() = %v, want the 401 unauthorized", err)
	}

	auth.SetTokens(testTokens)
	registerWithToken(t, m, "api", "after")
	poll.Until(t, 20*time.Second, "the watch resumes once the token is back", func() error {
		if rec.registered("during") != 1 || rec.registered("after") != 1 {
			return fmt.Errorf("not resumed: %v (Err %v)", d.Instances(), d.Err())
		}
		return nil
	})
	exactlyOnce(t, rec, d, []string{"before", "during", "after"})
	noSecrets(t, logs.String())
}

//go:build e2e

// End-to-end tests of regd's security flags with the real binary: REST over
// TLS (with and without client certificates), etcd's own TLS passed
// through, the refusal to listen beyond loopback unprotected, and access
// tokens (with a reload on SIGHUP).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/tlstest"
)

// secNode is a regd process whose REST API is reached at base with client.
type secNode struct {
	proc   *e2e.Proc
	node   e2e.Node
	base   string
	client *http.Client
}

// startSecNode starts regd on free ports with extra flags (which may
// override the node's URLs: the flag package keeps the last value) and
// waits until /readyz answers 200 through client at scheme://addr. A port
// clash (exit 2, "cannot listen") is retried with fresh ports.
func startSecNode(t *testing.T, bin, scheme string, client *http.Client, extra func(n e2e.Node) []string) secNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		n := e2e.NewNode(t)
		p := e2e.Start(t, bin, t.TempDir(), append(n.Args(), extra(n)...)...)
		s := secNode{proc: p, node: n, base: scheme + "://" + n.HTTPAddr, client: client}
		err := p.WaitReadyWith(client, s.base, readyTimeout)
		if err == nil {
			return s
		}
		if _, clash := e2e.PortClash(err); clash && attempt < 3 {
			continue
		}
		t.Fatalf("%v; stderr:\n%s", err, p.Stderr())
	}
}

// do sends one request (with a bearer token unless token is "") and returns
// status and body; a transport error is returned as is.
func (s secNode) do(method, path, token, body string) (int, string, http.Header, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		return 0, "", nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

func (s secNode) must(t *testing.T, method, path, token, body string, want int) string {
	t.Helper()
	status, b, _, err := s.do(method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, status, b, want)
	}
	return b
}

func tlsClient(cfg *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.ForceAttemptHTTP2 = true
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

const regBody = `{"address":"10.0.0.5:8080","ttl":3600}`

// TestE2ERESTTLS: with --http-cert-file and --http-key-file the REST API is
// HTTPS only; with --http-client-ca-file a client must present a
// certificate of that CA.
func TestE2ERESTTLS(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)
	certs := tlstest.New(t)

	t.Run("server certificate", func(t *testing.T) {
		t.Parallel()
		n := startSecNode(t, bin, "https", tlsClient(certs.ClientConfig(false)), func(e2e.Node) []string {
			return []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey}
		})
		n.must(t, http.MethodPut, "/v1/services/user/instances/u1", "", regBody, http.StatusCreated)
		if b := n.must(t, http.MethodGet, "/v1/services/user/instances", "", "", http.StatusOK); !strings.Contains(b, `"id":"u1"`) {
			t.Fatalf("list over HTTPS: %s", b)
		}
		resp, err := n.client.Get(n.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("served over %s", resp.Proto)

		// Plain HTTP to the TLS port is not served (Go's TLS server answers
		// it with a bare 400 and closes).
		plain := secNode{base: "http://" + n.node.HTTPAddr, client: &http.Client{Timeout: 5 * time.Second}}
		if status, b, _, err := plain.do(http.MethodGet, "/v1/services", "", ""); err == nil && status == http.StatusOK {
			t.Fatalf("plain HTTP was served: %d %s", status, b)
		}
		// A client that does not trust the CA refuses the server.
		stranger := secNode{base: n.base, client: tlsClient(&tls.Config{})}
		if _, _, _, err := stranger.do(http.MethodGet, "/healthz", "", ""); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("a client without the CA: %v, want a certificate error", err)
		}
		stop(t, n.proc, syscall.SIGTERM)
		checkLogs(t, n.proc.Stderr())
	})

	t.Run("client certificates required", func(t *testing.T) {
		t.Parallel()
		n := startSecNode(t, bin, "https", tlsClient(certs.ClientConfig(true)), func(e2e.Node) []string {
			return []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey, "--http-client-ca-file", certs.CA.CertFile}
		})
		n.must(t, http.MethodPut, "/v1/services/user/instances/u1", "", regBody, http.StatusCreated)

		anonymous := secNode{base: n.base, client: tlsClient(certs.ClientConfig(false))}
		if status, _, _, err := anonymous.do(http.MethodGet, "/healthz", "", ""); err == nil {
			t.Fatalf("a client without a certificate was served: %d", status)
		}
		other := tlstest.NewCA(t)
		cert, key := other.Issue(t, "intruder", false)
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg := certs.ClientConfig(false)
		cfg.Certificates = []tls.Certificate{pair}
		intruder := secNode{base: n.base, client: tlsClient(cfg)}
		if status, _, _, err := intruder.do(http.MethodGet, "/healthz", "", ""); err == nil {
			t.Fatalf("a client with a certificate of another CA was served: %d", status)
		}
		// mTLS counts as authentication: beyond loopback it needs no tokens.
		stop(t, n.proc, syscall.SIGTERM)
		checkLogs(t, n.proc.Stderr())
	})
}

// TestE2EEtcdTLS: etcd's TLS flags are passed through: a plain etcd client
// must speak TLS, and with --client-cert-auth present a certificate, to
// reach the embedded member, which sees REST registrations as ever.
func TestE2EEtcdTLS(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)
	certs := tlstest.New(t)

	t.Run("certificates", func(t *testing.T) {
		t.Parallel()
		n := startSecNode(t, bin, "http", &http.Client{Timeout: 5 * time.Second}, func(n e2e.Node) []string {
			client := strings.Replace(n.ClientURL, "http://", "https://", 1)
			peer := strings.Replace(n.PeerURL, "http://", "https://", 1)
			return []string{
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--cert-file", certs.ServerCert, "--key-file", certs.ServerKey,
				"--trusted-ca-file", certs.CA.CertFile, "--client-cert-auth",
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
				"--peer-cert-file", certs.ServerCert, "--peer-key-file", certs.ServerKey,
				"--peer-trusted-ca-file", certs.CA.CertFile, "--peer-client-cert-auth",
			}
		})
		n.must(t, http.MethodPut, "/v1/services/user/instances/u1", "", regBody, http.StatusCreated)
		endpoint := strings.TrimPrefix(n.node.ClientURL, "http://")

		if v, err := etcdGet(endpoint, certs.ClientConfig(true), "/service/user/u1"); err != nil || v != "10.0.0.5:8080" {
			t.Fatalf("etcd client with a certificate: %q %v", v, err)
		}
		if _, err := etcdGet(endpoint, certs.ClientConfig(false), "/service/user/u1"); err == nil {
			t.Fatal("etcd client without a certificate was served")
		}
		if _, err := etcdGet(endpoint, nil, "/service/user/u1"); err == nil {
			t.Fatal("etcd client without TLS was served")
		}
		stop(t, n.proc, syscall.SIGTERM)
	})

	t.Run("auto-tls", func(t *testing.T) {
		t.Parallel()
		n := startSecNode(t, bin, "http", &http.Client{Timeout: 5 * time.Second}, func(n e2e.Node) []string {
			client := strings.Replace(n.ClientURL, "http://", "https://", 1)
			peer := strings.Replace(n.PeerURL, "http://", "https://", 1)
			return []string{
				"--listen-client-urls", client, "--advertise-client-urls", client, "--auto-tls",
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--peer-auto-tls",
			}
		})
		n.must(t, http.MethodPut, "/v1/services/user/instances/u1", "", regBody, http.StatusCreated)
		endpoint := strings.TrimPrefix(n.node.ClientURL, "http://")
		// A self-signed certificate: encrypted, but nothing to verify it by.
		if v, err := etcdGet(endpoint, &tls.Config{InsecureSkipVerify: true}, "/service/user/u1"); err != nil || v != "10.0.0.5:8080" {
			t.Fatalf("etcd client over auto TLS: %q %v", v, err)
		}
		if _, err := etcdGet(endpoint, nil, "/service/user/u1"); err == nil {
			t.Fatal("etcd client without TLS was served")
		}
		if _, err := os.Stat(filepath.Join(n.node.DataDir, "fixtures", "client", "cert.pem")); err != nil {
			t.Errorf("auto-tls certificate: %v", err)
		}
		stop(t, n.proc, syscall.SIGTERM)
	})
}

// etcdGet reads key with a plain etcd client at endpoint (TLS when cfg is
// set) within 2 s.
func etcdGet(endpoint string, cfg *tls.Config, key string) (string, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: cfg, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) != 1 {
		return "", fmt.Errorf("%d keys", len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value), nil
}

// TestE2EBeyondLoopback: --http-addr beyond loopback without tokens is
// refused with one line; --insecure accepts it with a warning; a token file
// accepts it and the tokens are enforced (and reloaded on SIGHUP).
func TestE2EBeyondLoopback(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)
	anyAddr := func(n e2e.Node) string {
		_, port, _ := strings.Cut(n.HTTPAddr, ":")
		return "0.0.0.0:" + port
	}

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		n := e2e.NewNode(t)
		addr := anyAddr(n)
		p := e2e.Start(t, bin, t.TempDir(), append(n.Args(), "--http-addr", addr)...)
		if code := p.Wait(usageTimeout); code != 2 {
			t.Fatalf("exit code %d, want 2; stderr %q", code, p.Stderr())
		}
		want := fmt.Sprintf("regd: --http-addr %q: listening beyond loopback without --auth-token-file; add tokens, or --insecure to accept anyone on the network\n", addr)
		if p.Stderr() != want {
			t.Fatalf("stderr %q, want %q", p.Stderr(), want)
		}
		if _, err := os.Stat(n.DataDir); err == nil {
			t.Error("the refused start created its data dir")
		}
	})

	t.Run("insecure", func(t *testing.T) {
		t.Parallel()
		n := startSecNode(t, bin, "http", &http.Client{Timeout: 5 * time.Second}, func(n e2e.Node) []string {
			return []string{"--http-addr", anyAddr(n), "--insecure"}
		})
		n.must(t, http.MethodPut, "/v1/services/user/instances/u1", "", regBody, http.StatusCreated)
		stop(t, n.proc, syscall.SIGTERM)
		logs, _ := e2e.ParseLogs(n.proc.Stderr())
		warned := false
		for _, l := range logs {
			warned = warned || (l.Level == "warn" && strings.HasPrefix(l.Msg, "--insecure"))
		}
		if !warned {
			t.Errorf("no warning about --insecure in:\n%s", n.proc.Stderr())
		}
	})

	t.Run("tokens", func(t *testing.T) {
		t.Parallel()
		const (
			readTok  = "e2e-read-0123456789abcdef"
			writeTok = "e2e-write-0123456789abcdef"
			newTok   = "e2e-rotated-0123456789abcdef"
		)
		file := filepath.Join(t.TempDir(), "tokens")
		if err := os.WriteFile(file, []byte("read "+readTok+"\nwrite "+writeTok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n := startSecNode(t, bin, "http", &http.Client{Timeout: 5 * time.Second}, func(n e2e.Node) []string {
			return []string{"--http-addr", anyAddr(n), "--auth-token-file", file, "--auth-reads", "token", "--log-level", "debug"}
		})
		const inst = "/v1/services/user/instances/u1"
		for _, c := range []struct {
			method, path, token, body string
			want                      int
		}{
			{http.MethodPut, inst, "", regBody, http.StatusUnauthorized},
			{http.MethodPut, inst, readTok, regBody, http.StatusForbidden},
			{http.MethodPut, inst, "wrong-0123456789abcdef", regBody, http.StatusUnauthorized},
			{http.MethodPut, inst, writeTok, regBody, http.StatusCreated},
			{http.MethodGet, inst, "", "", http.StatusUnauthorized},
			{http.MethodGet, inst, readTok, "", http.StatusOK},
			{http.MethodGet, "/metrics", "", "", http.StatusUnauthorized},
			{http.MethodGet, "/metrics", readTok, "", http.StatusOK},
			{http.MethodGet, "/healthz", "", "", http.StatusOK},
			{http.MethodPut, inst + "/heartbeat", writeTok, "", http.StatusOK},
		} {
			status, body, hdr, err := n.do(c.method, c.path, c.token, c.body)
			if err != nil || status != c.want {
				t.Fatalf("%s %s with %q: %d %s %v, want %d", c.method, c.path, c.token, status, body, err, c.want)
			}
			if status == http.StatusUnauthorized && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), `Bearer realm="regd"`) {
				t.Fatalf("401 without the Bearer challenge: %q", hdr.Get("WWW-Authenticate"))
			}
		}

		// SIGHUP reloads the file: the new token works, the old ones stop.
		if err := os.WriteFile(file, []byte("write "+newTok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n.proc.Signal(syscall.SIGHUP)
		poll.Until(t, 5*time.Second, "the rotated token accepted after SIGHUP", func() error {
			status, _, _, err := n.do(http.MethodGet, inst, newTok, "")
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("status %d", status)
			}
			return err
		})
		n.must(t, http.MethodGet, inst, writeTok, "", http.StatusUnauthorized)
		// A broken file keeps the tokens in force: once regd has logged
		// that it read and refused it (the positive marker), the token
		// still works.
		if err := os.WriteFile(file, []byte("write tooshort1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n.proc.Signal(syscall.SIGHUP)
		poll.Until(t, 5*time.Second, "the broken token file refused", func() error {
			if !hasLog(n.proc.Stderr(), "token file not reloaded; the previous tokens stay in force") {
				return errors.New("not logged yet")
			}
			return nil
		})
		n.must(t, http.MethodGet, inst, newTok, "", http.StatusOK)

		stop(t, n.proc, syscall.SIGTERM)
		stderr := n.proc.Stderr()
		for _, tok := range []string{readTok, writeTok, newTok, "tooshort1"} {
			if strings.Contains(stderr, tok) {
				t.Errorf("the log contains the token %q", tok)
			}
		}
		if !hasLog(stderr, "token file reloaded") || !hasLog(stderr, "token file not reloaded; the previous tokens stay in force") {
			t.Errorf("reloads not logged:\n%s", stderr)
		}
	})
}

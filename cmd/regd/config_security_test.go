package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/tlstest"
)

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	cfgReadToken  = "read-token-0123456789"
	cfgWriteToken = "write-token-0123456789"
)

// TestConfigTokenFile: --auth-token-file is read and checked before
// anything starts; a bad file is one line naming the flag and the line,
// never the token.
func TestConfigTokenFile(t *testing.T) {
	good := "# tokens of regd\nread " + cfgReadToken + "\nwrite " + cfgWriteToken + "\n"
	unreadable := writeFile(t, "unreadable", good, 0o000)
	canRead := false
	if f, err := os.Open(unreadable); err == nil {
		f.Close()
		canRead = true // root ignores permission bits
	}
	tests := []struct {
		name    string
		content string // written to a file unless path is set
		path    string
		args    []string
		env     map[string]string
		wantErr string // error prefix after `--auth-token-file "<path>"`; "" means success
		check   func(t *testing.T, c *Config)
	}{
		{name: "good", content: good, check: func(t *testing.T, c *Config) {
			if len(c.Tokens) != 2 || c.Tokens[0].Scope != api.ScopeRead || c.Tokens[1].Scope != api.ScopeWrite || c.TokenReads {
				t.Errorf("Tokens %d, TokenReads %v", len(c.Tokens), c.TokenReads)
			}
		}},
		{name: "reads need tokens", content: good, args: []string{"--auth-reads", "token"}, check: func(t *testing.T, c *Config) {
			if !c.TokenReads {
				t.Error("TokenReads = false")
			}
		}},
		{name: "from env", content: good, env: map[string]string{"REGD_AUTH_READS": "token"}, check: func(t *testing.T, c *Config) {
			if !c.TokenReads || len(c.Tokens) != 2 {
				t.Errorf("TokenReads %v, tokens %d", c.TokenReads, len(c.Tokens))
			}
		}},
		{name: "beyond loopback with tokens", content: good, args: []string{"--http-addr", "0.0.0.0:8080"}, check: func(t *testing.T, c *Config) {
			if c.Insecure || len(c.exposures()) != 0 {
				t.Errorf("Insecure %v, exposures %v", c.Insecure, c.exposures())
			}
		}},
		{name: "short token", content: "write 0123456789\n", wantErr: ": line 1: token is shorter than 16 characters"},
		{name: "bad scope", content: "# x\nowner " + cfgWriteToken + "\n", wantErr: `: line 2: the scope (first word) must be "read", "write" or "admin"`},
		{name: "token first", content: cfgWriteToken + " write\n", wantErr: ": line 1: the scope"},
		{name: "one field", content: "read\n", wantErr: ": line 1: want"},
		{name: "duplicate", content: good + "read " + cfgWriteToken + "\n", wantErr: ": line 4: the same token is already on line 3"},
		{name: "empty", content: "\n# none\n", wantErr: ": no tokens in the file"},
		{name: "missing file", path: filepath.Join(t.TempDir(), "nope"), wantErr: ": cannot read: no such file or directory"},
		{name: "a directory", path: t.TempDir(), wantErr: ": cannot read: is a directory"},
		{name: "unreadable", path: unreadable, wantErr: ": cannot read: permission denied"},
		{name: "bad auth-reads", content: good, args: []string{"--auth-reads", "closed"}, wantErr: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "unreadable" && canRead {
				t.Skip("permission bits are not enforced here (running as root?)")
			}
			path := tt.path
			if path == "" {
				path = writeFile(t, "tokens", tt.content, 0o600)
			}
			args := append([]string{"--auth-token-file", path}, tt.args...)
			c, err := parseConfig(args, mapEnv(tt.env), &bytes.Buffer{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatal("parseConfig succeeded, want an error")
			}
			msg := err.Error()
			if tt.wantErr == "-" {
				if !strings.HasPrefix(msg, `--auth-reads "closed": must be "open" or "token"`) {
					t.Fatalf("error %q", msg)
				}
				return
			}
			if want := fmt.Sprintf("--auth-token-file %q%s", path, tt.wantErr); !strings.HasPrefix(msg, want) {
				t.Errorf("error %q, want prefix %q", msg, want)
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, cfgWriteToken) || strings.Contains(msg, "0123456789") {
				t.Errorf("error %q spans lines or shows a token", msg)
			}
		})
	}

	t.Run("auth-reads token without a file", func(t *testing.T) {
		_, err := parseConfig([]string{"--auth-reads", "token"}, mapEnv(nil), &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), `--auth-reads "token": needs --auth-token-file`) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("world-readable file is an exposure", func(t *testing.T) {
		path := writeFile(t, "tokens", good, 0o644)
		c, err := parseConfig([]string{"--auth-token-file", path}, mapEnv(nil), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if ex := c.exposures(); len(ex) != 1 || ex[0].key != "auth-token-file" {
			t.Fatalf("exposures %+v, want one about the token file", ex)
		}
	})
}

// TestConfigInsecure: a REST listener beyond loopback needs tokens, a
// client CA, or --insecure.
func TestConfigInsecure(t *testing.T) {
	certs := tlstest.New(t)
	const refusal = `: listening beyond loopback without --auth-token-file; add tokens, or --insecure to accept anyone on the network`
	tests := []struct {
		addr string
		args []string
		ok   bool
	}{
		{addr: "127.0.0.1:8080", ok: true},
		{addr: "127.1.2.3:8080", ok: true},
		{addr: "[::1]:8080", ok: true},
		{addr: "localhost:8080", ok: true},
		{addr: "LOCALHOST:8080", ok: true},
		{addr: "0.0.0.0:8080"},
		{addr: ":8080"},
		{addr: "[::]:8080"},
		{addr: "10.0.0.5:8080"},
		{addr: "regd.example:8080"},
		{addr: "0.0.0.0:8080", args: []string{"--insecure"}, ok: true},
		{addr: "0.0.0.0:8080", args: []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey}},
		{addr: "0.0.0.0:8080", args: []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey, "--http-client-ca-file", certs.CA.CertFile}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr+strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := parseConfig(append([]string{"--http-addr", tt.addr}, tt.args...), mapEnv(nil), &bytes.Buffer{})
			if tt.ok {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				insecure := slices.Contains(tt.args, "--insecure")
				if got := len(c.exposures()) == 1; got != insecure {
					t.Errorf("exposures %+v; want one exactly when --insecure is given", c.exposures())
				}
				return
			}
			if want := fmt.Sprintf("--http-addr %q", tt.addr) + refusal; err == nil || err.Error() != want {
				t.Fatalf("err %v, want %q", err, want)
			}
		})
	}
	t.Run("from env", func(t *testing.T) {
		_, err := parseConfig(nil, mapEnv(map[string]string{"REGD_HTTP_ADDR": "0.0.0.0:1"}), &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), `--http-addr "0.0.0.0:1" (from REGD_HTTP_ADDR): listening beyond loopback`) {
			t.Fatalf("err %v", err)
		}
		if _, err := parseConfig(nil, mapEnv(map[string]string{"REGD_HTTP_ADDR": "0.0.0.0:1", "REGD_INSECURE": "true"}), &bytes.Buffer{}); err != nil {
			t.Fatalf("with REGD_INSECURE: %v", err)
		}
	})
}

// TestConfigTLS: the TLS flags of the REST API and of etcd, each error one
// line naming the flag.
func TestConfigTLS(t *testing.T) {
	certs := tlstest.New(t)
	other := tlstest.NewCA(t)
	otherCert, _ := other.Issue(t, "other", true)
	notPEM := writeFile(t, "garbage.pem", "not a certificate\n", 0o600)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	sc, sk, ca := certs.ServerCert, certs.ServerKey, certs.CA.CertFile
	httpsClient := []string{"--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"}
	httpsPeer := []string{"--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"}
	with := func(lists ...[]string) []string { return slices.Concat(lists...) }

	tests := []struct {
		name   string
		args   []string
		prefix string // error prefix; "" means success
		check  func(t *testing.T, c *Config)
	}{
		// REST
		{name: "rest tls", args: []string{"--http-cert-file", sc, "--http-key-file", sk}, check: func(t *testing.T, c *Config) {
			if c.HTTPTLS == nil || c.HTTPTLS.Config().MinVersion != tls.VersionTLS12 || c.HTTPTLS.Config().ClientAuth != tls.NoClientCert {
				t.Errorf("HTTPTLS %+v", c.HTTPTLS)
			}
		}},
		{name: "rest mtls", args: []string{"--http-cert-file", sc, "--http-key-file", sk, "--http-client-ca-file", ca}, check: func(t *testing.T, c *Config) {
			if c.HTTPTLS == nil || c.HTTPTLS.Config().ClientAuth != tls.RequireAndVerifyClientCert || c.HTTPTLS.Config().ClientCAs == nil {
				t.Errorf("HTTPTLS %+v", c.HTTPTLS)
			}
		}},
		{name: "rest cert without key", args: []string{"--http-cert-file", sc}, prefix: fmt.Sprintf("--http-cert-file %q: needs --http-key-file too", sc)},
		{name: "rest key without cert", args: []string{"--http-key-file", sk}, prefix: fmt.Sprintf("--http-key-file %q: needs --http-cert-file too", sk)},
		{name: "rest cert missing", args: []string{"--http-cert-file", missing, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: cannot read: no such file", missing)},
		{name: "rest key missing", args: []string{"--http-cert-file", sc, "--http-key-file", missing}, prefix: fmt.Sprintf("--http-key-file %q: cannot read: no such file", missing)},
		{name: "rest cert not PEM", args: []string{"--http-cert-file", notPEM, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: with --http-key-file %q: ", notPEM, sk)},
		{name: "rest key of another cert", args: []string{"--http-cert-file", otherCert, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: with --http-key-file %q: ", otherCert, sk)},
		{name: "rest client CA without TLS", args: []string{"--http-client-ca-file", ca}, prefix: fmt.Sprintf("--http-client-ca-file %q: needs --http-cert-file", ca)},
		{name: "rest client CA not PEM", args: []string{"--http-cert-file", sc, "--http-key-file", sk, "--http-client-ca-file", notPEM}, prefix: fmt.Sprintf("--http-client-ca-file %q: holds no PEM certificate", notPEM)},

		// etcd client side
		{name: "etcd client tls", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--trusted-ca-file", ca, "--client-cert-auth"}), check: func(t *testing.T, c *Config) {
			if c.Server.Node.ClientTLSInfo.CertFile != sc || c.Server.Node.ClientTLSInfo.KeyFile != sk || c.Server.Node.ClientTLSInfo.TrustedCAFile != ca || !c.Server.Node.ClientTLSInfo.ClientCertAuth || c.Server.Node.ClientAutoTLS {
				t.Errorf("ClientTLS %v auto %v", c.Server.Node.ClientTLSInfo, c.Server.Node.ClientAutoTLS)
			}
			if !c.Server.Node.PeerTLSInfo.Empty() || c.Server.Node.PeerAutoTLS {
				t.Errorf("PeerTLS %v auto %v", c.Server.Node.PeerTLSInfo, c.Server.Node.PeerAutoTLS)
			}
		}},
		{name: "etcd client auto tls", args: with(httpsClient, []string{"--auto-tls"}), check: func(t *testing.T, c *Config) {
			if !c.Server.Node.ClientAutoTLS || !c.Server.Node.ClientTLSInfo.Empty() {
				t.Errorf("ClientTLS %v auto %v", c.Server.Node.ClientTLSInfo, c.Server.Node.ClientAutoTLS)
			}
		}},
		{name: "https client URL without cert", args: httpsClient, prefix: `--listen-client-urls "https://127.0.0.1:2379": an https URL needs --cert-file and --key-file, or --auto-tls`},
		{name: "https advertised client URL without cert", args: []string{"--advertise-client-urls", "https://127.0.0.1:2379"}, prefix: `--advertise-client-urls "https://127.0.0.1:2379": an https URL needs`},
		{name: "client cert without https URL", args: []string{"--cert-file", sc, "--key-file", sk}, prefix: fmt.Sprintf("--cert-file %q: no https URL in --listen-client-urls to use it on", sc)},
		{name: "auto-tls without https URL", args: []string{"--auto-tls"}, prefix: `--auto-tls "true": no https URL in --listen-client-urls`},
		{name: "client key without cert", args: with(httpsClient, []string{"--key-file", sk}), prefix: fmt.Sprintf("--key-file %q: needs --cert-file too", sk)},
		{name: "client cert unreadable", args: with(httpsClient, []string{"--cert-file", missing, "--key-file", sk}), prefix: fmt.Sprintf("--cert-file %q: cannot read", missing)},
		{name: "client-cert-auth without CA", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--client-cert-auth"}), prefix: `--client-cert-auth "true": needs --trusted-ca-file`},
		{name: "client CA not PEM", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--trusted-ca-file", notPEM}), prefix: fmt.Sprintf("--trusted-ca-file %q: holds no PEM certificate", notPEM)},
		{name: "auto-tls with cert", args: with(httpsClient, []string{"--auto-tls", "--cert-file", sc, "--key-file", sk}), prefix: `--auto-tls "true": given together with --cert-file`},
		{name: "auto-tls with cert auth", args: with(httpsClient, []string{"--auto-tls", "--client-cert-auth", "--trusted-ca-file", ca}), prefix: `--auto-tls "true": cannot verify client certificates`},
		{name: "client-cert-auth over http", args: []string{"--client-cert-auth", "--trusted-ca-file", ca}, prefix: `--client-cert-auth "true": needs https URLs`},

		// etcd peer side
		{name: "etcd peer tls", args: with(httpsPeer, []string{"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"}), check: func(t *testing.T, c *Config) {
			if c.Server.Node.PeerTLSInfo.CertFile != sc || !c.Server.Node.PeerTLSInfo.ClientCertAuth || c.Server.Node.PeerTLSInfo.TrustedCAFile != ca || !c.Server.Node.ClientTLSInfo.Empty() {
				t.Errorf("PeerTLS %v ClientTLS %v", c.Server.Node.PeerTLSInfo, c.Server.Node.ClientTLSInfo)
			}
			if c.Server.Node.InitialCluster != "default=https://127.0.0.1:2380" {
				t.Errorf("InitialCluster %q", c.Server.Node.InitialCluster)
			}
		}},
		{name: "etcd peer auto tls", args: with(httpsPeer, []string{"--peer-auto-tls"}), check: func(t *testing.T, c *Config) {
			if !c.Server.Node.PeerAutoTLS {
				t.Error("PeerAutoTLS = false")
			}
		}},
		{name: "https peer URL without cert", args: httpsPeer, prefix: `--listen-peer-urls "https://127.0.0.1:2380": an https URL needs --peer-cert-file and --peer-key-file, or --peer-auto-tls`},
		{name: "peer cert without https URL", args: []string{"--peer-cert-file", sc, "--peer-key-file", sk}, prefix: fmt.Sprintf("--peer-cert-file %q: no https URL in --listen-peer-urls", sc)},
		{name: "peer-auto-tls without https URL", args: []string{"--peer-auto-tls"}, prefix: `--peer-auto-tls "true": no https URL in --listen-peer-urls`},
		{name: "peer-client-cert-auth without CA", args: with(httpsPeer, []string{"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-client-cert-auth"}), prefix: `--peer-client-cert-auth "true": needs --peer-trusted-ca-file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, mapEnv(nil), &bytes.Buffer{})
			if tt.prefix == "" {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("parseConfig succeeded, want an error starting %q", tt.prefix)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.prefix) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line starting %q", msg, tt.prefix)
			}
		})
	}

	t.Run("etcd exposures", func(t *testing.T) {
		c, err := parseConfig([]string{
			"--listen-client-urls", "http://0.0.0.0:2379", "--listen-peer-urls", "https://10.0.0.1:2380",
			"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
		}, mapEnv(nil), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		ex := c.exposures()
		if len(ex) != 1 || ex[0].key != "listen-client-url" || ex[0].value != "http://0.0.0.0:2379" {
			t.Fatalf("exposures %+v, want the client URL only (the peer URL asks for certificates)", ex)
		}
	})
}

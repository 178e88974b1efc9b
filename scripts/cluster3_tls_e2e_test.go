//go:build e2e

package scripts_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/internal/poll"
)

var tlsMemberLine = regexp.MustCompile(`(?m)^cluster3: (m[123]) pid (\d+) rest (https://127\.0\.0\.1:\d+) client (https://127\.0\.0\.1:\d+)$`)

// TestE2ECluster3TLS: `cluster3.sh start --tls` makes its own CA and
// certificates and runs the cluster over TLS end to end: REST over HTTPS,
// etcd's client URLs with client certificates, peers with member
// certificates. status and stop keep working.
func TestE2ECluster3TLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed; cluster3.sh --tls needs it")
	}
	c := newCluster(t)
	began := time.Now()
	out, code := c.run(75*time.Second, "start", "--tls")
	t.Logf("start --tls took %v", time.Since(began).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("cluster3.sh start --tls: exit %d\n%s", code, out)
	}
	ms := tlsMemberLine.FindAllStringSubmatch(out, -1)
	if len(ms) != 3 {
		t.Fatalf("start printed %d https member lines, want 3:\n%s", len(ms), out)
	}
	rest, client := map[string]string{}, map[string]string{}
	for _, m := range ms {
		rest[m[1]], client[m[1]] = m[3], m[4]
	}
	c.checkWhere(out)
	tlsDir := filepath.Join(c.dir, "tls")
	caPEM, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("tls/ca.crt holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	send := func(method, url, body string) (int, string, error) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	// Register through m1 over HTTPS; m2 lists it.
	status, body, err := send(http.MethodPut, rest["m1"]+"/v1/services/tls/instances/a", `{"address":"10.9.0.1:80","ttl":60}`)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("register over HTTPS: %d %s %v", status, body, err)
	}
	poll.Until(t, 5*time.Second, "instance listed on m2", func() error {
		status, body, err := send(http.MethodGet, rest["m2"]+"/v1/services/tls/instances", "")
		if err != nil || status != 200 || !strings.Contains(body, `"id":"a"`) {
			return fmt.Errorf("%d %s %v", status, body, err)
		}
		return nil
	})
	// Heartbeats on every member: a follower renews at the leader over
	// lease streams it dials to the leader's https client URL with its own
	// certificate (--client-cert-auth is on), not through etcd's
	// forwarding (node/renew.go).
	streamed := regexp.MustCompile(`(?m)^regd_lease_renewals_total\{path="stream"\} ([0-9.e+]+)$`)
	poll.Until(t, 20*time.Second, "both followers renewing over TLS lease streams", func() error {
		n := 0
		for _, m := range []string{"m1", "m2", "m3"} {
			if status, body, err := send(http.MethodPut, rest[m]+"/v1/services/tls/instances/a/heartbeat", ""); err != nil || status != http.StatusOK {
				return fmt.Errorf("heartbeat on %s: %d %s %v", m, status, body, err)
			}
			_, body, err := send(http.MethodGet, rest[m]+"/metrics", "")
			if err != nil {
				return err
			}
			if g := streamed.FindStringSubmatch(body); g != nil && g[1] != "0" {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("%d members renewed over a stream, want the 2 followers", n)
		}
		return nil
	})
	// Plain HTTP is not served.
	plainURL := strings.Replace(rest["m3"], "https://", "http://", 1) + "/v1/services"
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(plainURL); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served")
		}
	}

	// etcd's client URL wants the client certificate the script made.
	pair, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "client.crt"), filepath.Join(tlsDir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{client["m3"]},
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	resp, err := cli.Get(ctx, "/service/tls/a")
	cancel()
	cli.Close()
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "10.9.0.1:80" {
		t.Fatalf("etcd client over TLS on m3: %v %v", resp, err)
	}

	out, code = c.run(30*time.Second, "status")
	if code != 0 || strings.Count(out, " running pid ") != 3 || !regexp.MustCompile(`(?m)^leader m[123]$`).MatchString(out) ||
		!strings.Contains(out, "rest https://") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	stopping := time.Now()
	out, code = c.run(40*time.Second, "stop")
	t.Logf("stop took %v; the whole test %v", time.Since(stopping).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if code != 0 || !strings.Contains(out, "cluster3: stopped") {
		t.Fatalf("stop: exit %d\n%s", code, out)
	}
	for _, n := range []string{"m1", "m2", "m3"} {
		if pid := c.pid(n); pid > 0 && alive(pid) {
			t.Fatalf("%s (pid %d) still running after stop", n, pid)
		}
	}
	c.checkNotRunning("after stop")
}

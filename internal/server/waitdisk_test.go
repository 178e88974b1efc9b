package server

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/tlstest"
)

// The wait serves 503 over the REST API's TLS, ends when the data dir can
// be written, and leaves the listener to the real server.
func TestWaitForDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	undo := e2e.LockDir(t, dir)
	if err := PrepareDataDir(dir); err == nil {
		t.Fatal("PrepareDataDir passes on a locked data dir")
	}
	certs := tlstest.New(t)
	pair, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan bool, 1)
	go func() { done <- WaitForDataDir(t.Context(), zap.NewNop(), dir, ln, srvTLS, errors.New("locked")) }()

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(false)}}
	defer hc.CloseIdleConnections()
	base := "https://" + ln.Addr().String()
	send := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, body := send(http.MethodGet, path)
		return resp.StatusCode, body
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while waiting: %d", code)
	}
	resp, body := send(http.MethodPut, "/v1/services/a/instances/b")
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); resp.StatusCode != http.StatusServiceUnavailable || err != nil ||
		e.Error.Code != "storage_unwritable" || e.Error.Message == "" {
		t.Errorf("a request while waiting: %d %s", resp.StatusCode, body)
	}
	if ct, ra := resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After"); ct != "application/json" || ra == "" {
		t.Errorf("a request while waiting: Content-Type %q, Retry-After %q", ct, ra)
	}
	// Load balancers probe with HEAD: the same statuses, no body.
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
		if resp, body := send(http.MethodHead, path); resp.StatusCode != want || body != "" {
			t.Errorf("HEAD %s while waiting: %d %q, want %d and no body", path, resp.StatusCode, body, want)
		}
	}
	select {
	case <-done:
		t.Fatal("the wait ended on a locked data dir")
	default:
	}

	undo()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("the wait reported an interruption")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end after the data dir was unlocked")
	}
	hc.CloseIdleConnections()
	realSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "real") })}
	go realSrv.Serve(tls.NewListener(ln, srvTLS)) //nolint:errcheck // ends with Close
	defer realSrv.Close()
	if code, body := get("/v1/services"); code != http.StatusOK || body != "real" {
		t.Errorf("after the wait the listener answers %d %q, want the real server", code, body)
	}
}

package main

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
	if err := checkDataDir(dir); err == nil {
		t.Fatal("checkDataDir passes on a locked data dir")
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
	go func() { done <- waitForDataDir(t.Context(), zap.NewNop(), dir, ln, srvTLS, errors.New("locked")) }()

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig(false)}}
	defer hc.CloseIdleConnections()
	base := "https://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while waiting: %d", code)
	}
	code, body := get("/v1/services")
	var e struct{ Error struct{ Code string } }
	if err := json.Unmarshal([]byte(body), &e); code != http.StatusServiceUnavailable || err != nil || e.Error.Code != "storage_unwritable" {
		t.Errorf("a request while waiting: %d %s", code, body)
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

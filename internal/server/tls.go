package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// ReloadableTLS is the REST API's TLS configuration with a certificate that
// can be swapped while the server runs: SIGHUP reloads it (see Reloader), so
// a renewed certificate needs no restart. Connections already open keep the
// one they were made with.
type ReloadableTLS struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
	config            *tls.Config
}

// NewReloadableTLS loads the PEM key pair (and the client CA bundle, when
// clientCAFile is not empty) and builds the server side of TLS: TLS 1.2 or
// later, HTTP/2 offered, and with a client CA, client certificates required
// and verified against it.
func NewReloadableTLS(certFile, keyFile, clientCAFile string) (*ReloadableTLS, error) {
	t := &ReloadableTLS{certFile: certFile, keyFile: keyFile}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	t.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
	if clientCAFile != "" {
		b, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", clientCAFile)
		}
		t.config.ClientCAs = pool
		t.config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return t, nil
}

// Config is the configuration to serve with (Config.TLS); it always
// presents the certificate last loaded.
func (t *ReloadableTLS) Config() *tls.Config { return t.config }

// CertFile is the certificate's path, for log lines.
func (t *ReloadableTLS) CertFile() string { return t.certFile }

// Reload reads the key pair again. On error the current certificate stays
// in use: a half-written renewal must not take the API down.
func (t *ReloadableTLS) Reload() error {
	pair, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return err
	}
	t.cert.Store(&pair)
	return nil
}

package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"

	"github.com/regd/regd/api"
)

// Reloader re-reads what an operator rotates without a restart: the REST
// API's access tokens and its TLS certificate. The regd command calls
// Reload on SIGHUP.
type Reloader struct {
	TokenFile string         // re-read into Auth
	Auth      *api.Auth      // nil: no tokens to reload
	TLS       *ReloadableTLS // nil: no certificate to reload
}

// Empty reports whether there is nothing to reload; SIGHUP then keeps its
// default meaning.
func (r Reloader) Empty() bool { return r.Auth == nil && r.TLS == nil }

// Reload re-reads the token file and the certificate. A file that no
// longer parses is logged and the tokens or certificate in force stay: a
// typo must not lock every client out.
func (r Reloader) Reload(lg *zap.Logger) {
	if r.Auth != nil {
		tokens, err := LoadTokens(r.TokenFile)
		if err != nil {
			// err names a line, never a token.
			lg.Warn("token file not reloaded; the previous tokens stay in force",
				zap.String("file", r.TokenFile), zap.String("problem", err.Error()))
		} else {
			r.Auth.SetTokens(tokens)
			lg.Info("token file reloaded", zap.String("file", r.TokenFile), zap.Int("tokens", len(tokens)))
		}
	}
	if r.TLS != nil {
		if err := r.TLS.Reload(); err != nil {
			lg.Warn("REST certificate not reloaded; the previous one stays in use",
				zap.String("cert-file", r.TLS.CertFile()), zap.Error(err))
		} else {
			lg.Info("REST certificate reloaded", zap.String("cert-file", r.TLS.CertFile()))
		}
	}
}

// LoadTokens reads and parses a token file (api.ParseTokens). Its errors
// name a line, never a token, and leave out the path, which the caller
// names already.
func LoadTokens(path string) ([]api.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", PathReason(err))
	}
	defer f.Close()
	return api.ParseTokens(f)
}

// PathReason strips the path that *fs.PathError repeats, for messages
// that quote the path themselves.
func PathReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

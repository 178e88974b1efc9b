package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/node"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise
// the module version from the build info is used.
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return "regd " + v + " (etcd v3.7.3)"
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // started, then failed
	exitUsage  = 2 // bad flags or environment: nothing was started
)

// run is the whole program. It returns when ctx ends (a signal) or the node
// fails, after shutting down; its result is the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cfg, err := parseConfig(args, getenv, stdout)
	switch {
	case errors.Is(err, errHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "regd: %v\n", err)
		return exitUsage
	case cfg.ShowVersion:
		fmt.Fprintln(stdout, versionString())
		return exitOK
	}
	ln, diskErr, err := bind(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "regd: %v\n", err)
		return exitUsage
	}
	lg, etcdLg := newLoggers(stderr, cfg.LogLevel, cfg.EtcdLogLevel)
	defer lg.Sync() //nolint:errcheck // nothing to do about a failed sync of stderr
	var restTLS *tls.Config
	if cfg.HTTPTLS != nil {
		restTLS = cfg.HTTPTLS.config
	}
	if diskErr != nil && !waitForDataDir(ctx, lg, cfg.DataDir, ln, restTLS, diskErr) {
		ln.Close()
		lg.Info("interrupted while waiting for the data dir", zap.NamedError("cause", context.Cause(ctx)))
		return exitOK
	}

	for _, e := range cfg.exposures() {
		lg.Warn(e.msg, zap.String(e.key, e.value))
	}
	if limit, ok := fileLimit(); ok {
		// Go raises the soft limit to the hard one at start; this is what
		// there is for connections, etcd's files and its peers.
		lg.Debug("file descriptor limit", zap.Uint64("nofile", limit), zap.Int("max-conns", cfg.MaxConns))
		if limit < uint64(cfg.MaxConns)+fdReserve {
			lg.Info("--max-conns is above what the file descriptor limit leaves for connections; raise the limit (ulimit -n) to keep the cap meaningful",
				zap.Uint64("nofile", limit), zap.Int("max-conns", cfg.MaxConns))
		}
	}
	var auth *api.Auth
	if cfg.Tokens != nil {
		auth = api.NewAuth(cfg.Tokens, cfg.TokenReads)
	}

	srv, err := server.Start(ctx, server.Config{
		Node: node.Config{
			Name:                cfg.Name,
			DataDir:             cfg.DataDir,
			ListenClientURLs:    cfg.ListenClientURLs,
			AdvertiseClientURLs: cfg.AdvertiseClientURLs,
			ListenPeerURLs:      cfg.ListenPeerURLs,
			AdvertisePeerURLs:   cfg.InitialAdvertisePeerURLs,
			InitialCluster:      cfg.InitialCluster,
			ClusterState:        cfg.InitialClusterState,
			ClusterToken:        cfg.InitialClusterToken,
			Logger:              etcdLg,
			ClientTLSInfo:       cfg.ClientTLS,
			PeerTLSInfo:         cfg.PeerTLS,
			ClientAutoTLS:       cfg.ClientAutoTLS,
			PeerAutoTLS:         cfg.PeerAutoTLS,
			MinFreeBytes:        cfg.MinFreeBytes,
			QuotaBackendBytes:   cfg.QuotaBackendBytes,
		},
		Listener:         ln,
		Prefix:           cfg.Prefix,
		Logger:           lg,
		ExpiryRetention:  cfg.ExpiryRetention,
		TLS:              restTLS,
		Auth:             auth,
		MaxConns:         cfg.MaxConns,
		MaxInFlight:      cfg.MaxInFlight,
		StreamsPerClient: cfg.MaxWatchesPerClient,
		EnablePprof:      cfg.EnablePprof,
	})
	if err != nil {
		if ctx.Err() != nil {
			lg.Info("interrupted before the node was ready", zap.NamedError("cause", context.Cause(ctx)))
			return exitOK
		}
		lg.Error("regd could not start", zap.Error(err))
		fmt.Fprintf(stderr, "regd: %v\n", err)
		return exitFailed
	}
	// SIGHUP re-reads the token file and the REST certificate, so both
	// can be rotated without a restart. Without either there is nothing to
	// reload, and SIGHUP keeps its default meaning.
	hup := make(chan os.Signal, 1)
	if auth != nil || cfg.HTTPTLS != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	code := exitOK
wait:
	for {
		select {
		case <-ctx.Done():
			lg.Info("shutting down", zap.String("reason", context.Cause(ctx).Error()))
			break wait
		case err := <-srv.Fatal():
			lg.Error("node failed; shutting down", zap.Error(err))
			code = exitFailed
			break wait
		case <-hup:
			reload(lg, cfg, auth)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Close(sctx); err != nil {
		lg.Warn("unclean shutdown", zap.Error(err))
	}
	return code
}

// bind checks that every port regd needs is free before anything starts, so
// that a busy port is one line naming its flag rather than a failure deep in
// etcd's startup. The REST listener is kept and handed to the server; etcd's
// ports are released again because etcd binds them itself. A data dir that
// holds a member but cannot be written is not an error but diskErr: the
// disk broke under a running member, and regd waits for it (waitdisk.go).
func bind(cfg *Config) (ln net.Listener, diskErr, err error) {
	for _, f := range []struct {
		flag string
		urls []url.URL
	}{
		{"--listen-client-urls", cfg.ListenClientURLs},
		{"--listen-peer-urls", cfg.ListenPeerURLs},
	} {
		for _, u := range f.urls {
			l, err := net.Listen("tcp", u.Host)
			if err != nil {
				return nil, nil, fmt.Errorf("%s %q: cannot listen: %v", f.flag, u.String(), listenReason(err))
			}
			l.Close()
		}
	}
	ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("--http-addr %q: cannot listen: %v", cfg.HTTPAddr, listenReason(err))
	}
	// Last, because it creates the directory: a busy port must not leave
	// an empty data dir behind.
	if err := checkDataDir(cfg.DataDir); err != nil {
		if hasMember(cfg.DataDir) {
			return ln, err, nil
		}
		ln.Close()
		return nil, nil, err
	}
	return ln, nil, nil
}

// reload re-reads what SIGHUP rotates. A file that no longer parses is
// reported and the current tokens or certificate stay in force: a typo
// must not lock every client out.
func reload(lg *zap.Logger, cfg *Config, auth *api.Auth) {
	if auth != nil {
		tokens, err := loadTokens(cfg.AuthTokenFile)
		if err != nil {
			// err names a line, never a token.
			lg.Warn("token file not reloaded; the previous tokens stay in force",
				zap.String("file", cfg.AuthTokenFile), zap.String("problem", err.Error()))
		} else {
			auth.SetTokens(tokens)
			lg.Info("token file reloaded", zap.String("file", cfg.AuthTokenFile), zap.Int("tokens", len(tokens)))
		}
	}
	if cfg.HTTPTLS != nil {
		if err := cfg.HTTPTLS.reload(); err != nil {
			lg.Warn("REST certificate not reloaded; the previous one stays in use",
				zap.String("cert-file", cfg.HTTPCertFile), zap.Error(err))
		} else {
			lg.Info("REST certificate reloaded", zap.String("cert-file", cfg.HTTPCertFile))
		}
	}
}

// fdReserve is the file descriptors regd needs besides REST connections:
// etcd's WAL, snapshots and bbolt, its client and peer connections.
const fdReserve = 1024

func listenReason(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// newLoggers returns regd's logger and etcd's: one JSON stream on stderr,
// each with its own level, because etcd is chatty at info.
func newLoggers(w io.Writer, level, etcdLevel zapcore.Level) (*zap.Logger, *zap.Logger) {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(encCfg)
	sink := zapcore.Lock(zapcore.AddSync(w))
	lg := zap.New(zapcore.NewCore(enc, sink, level), zap.ErrorOutput(sink))
	etcdLg := zap.New(zapcore.NewCore(enc.Clone(), sink, etcdLevel), zap.ErrorOutput(sink)).Named("etcd")
	return lg, etcdLg
}

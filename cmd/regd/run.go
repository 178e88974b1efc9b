package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime/debug"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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
	ln, err := bind(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "regd: %v\n", err)
		return exitUsage
	}
	lg, etcdLg := newLoggers(stderr, cfg.LogLevel, cfg.EtcdLogLevel)
	defer lg.Sync() //nolint:errcheck // nothing to do about a failed sync of stderr

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
		},
		Listener:        ln,
		Prefix:          cfg.Prefix,
		Logger:          lg,
		ExpiryRetention: cfg.ExpiryRetention,
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
	code := exitOK
	select {
	case <-ctx.Done():
		lg.Info("shutting down", zap.String("reason", context.Cause(ctx).Error()))
	case err := <-srv.Fatal():
		lg.Error("node failed; shutting down", zap.Error(err))
		code = exitFailed
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
// ports are released again because etcd binds them itself.
func bind(cfg *Config) (net.Listener, error) {
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
				return nil, fmt.Errorf("%s %q: cannot listen: %v", f.flag, u.String(), listenReason(err))
			}
			l.Close()
		}
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr %q: cannot listen: %v", cfg.HTTPAddr, listenReason(err))
	}
	// Last, because it creates the directory: a busy port must not leave
	// an empty data dir behind.
	if err := checkDataDir(cfg.DataDir); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

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

package main

import (
	"context"
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

	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/server"
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

// signalContext ends at the first SIGINT or SIGTERM, with the signal as
// its cause; a second one exits at once, without a clean shutdown.
func signalContext() context.Context {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cancel(fmt.Errorf("received %s", sig))
		<-sigs
		fmt.Fprintln(os.Stderr, "regd: second signal; exiting without a clean shutdown")
		os.Exit(exitFailed)
	}()
	return ctx
}

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
	if diskErr != nil && !server.WaitForDataDir(ctx, lg, cfg.Server.Node.DataDir, ln, cfg.Server.TLS, diskErr) {
		ln.Close()
		if cfg.Server.DNSPacketConn != nil {
			cfg.Server.DNSPacketConn.Close()
			cfg.Server.DNSListener.Close()
		}
		lg.Info("interrupted while waiting for the data dir", zap.NamedError("cause", context.Cause(ctx)))
		return exitOK
	}

	for _, e := range cfg.exposures() {
		lg.Warn(e.msg, zap.String(e.key, e.value))
	}
	if limit, ok := fileLimit(); ok {
		// Go raises the soft limit to the hard one at start; this is what
		// there is for connections, etcd's files and its peers.
		maxConns := cfg.Server.MaxConns
		lg.Debug("file descriptor limit", zap.Uint64("nofile", limit), zap.Int("max-conns", maxConns))
		if limit < uint64(maxConns)+fdReserve {
			lg.Info("--max-conns is above what the file descriptor limit leaves for connections; raise the limit (ulimit -n) to keep the cap meaningful",
				zap.Uint64("nofile", limit), zap.Int("max-conns", maxConns))
		}
	}

	cfg.Server.Listener = ln
	cfg.Server.Logger = lg
	cfg.Server.Node.Logger = etcdLg
	srv, err := server.Start(ctx, cfg.Server)
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
	reloader := server.Reloader{TokenFile: cfg.AuthTokenFile, Auth: cfg.Server.Auth, TLS: cfg.HTTPTLS}
	hup := make(chan os.Signal, 1)
	if !reloader.Empty() {
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
			if errors.Is(err, server.ErrRemoved) {
				lg.Warn("shutting down", zap.String("reason", err.Error()))
				break wait
			}
			lg.Error("node failed; shutting down", zap.Error(err))
			code = exitFailed
			break wait
		case <-hup:
			reloader.Reload(lg)
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
// etcd's startup. The REST listener and the DNS sockets (into cfg.Server)
// are kept and handed to the server; etcd's ports are released again
// because etcd binds them itself. A data dir that
// holds a member but cannot be written is not an error but diskErr: the
// disk broke under a running member, and regd waits for it
// (server.WaitForDataDir). A fresh one that cannot be written is an error.
func bind(cfg *Config) (ln net.Listener, diskErr, err error) {
	n := &cfg.Server.Node
	for _, f := range []struct {
		flag string
		urls []url.URL
	}{
		{"--listen-client-urls", n.ListenClientURLs},
		{"--listen-peer-urls", n.ListenPeerURLs},
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
	if cfg.DNSAddr != "" {
		if cfg.Server.DNSPacketConn, cfg.Server.DNSListener, err = dns.Listen(cfg.DNSAddr); err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("--dns-addr %q: cannot listen: %v", cfg.DNSAddr, err)
		}
	}
	closeAll := func() {
		ln.Close()
		if cfg.Server.DNSPacketConn != nil {
			cfg.Server.DNSPacketConn.Close()
			cfg.Server.DNSListener.Close()
		}
	}
	// Last, because it creates the directory: a busy port must not leave
	// an empty data dir behind.
	if err := server.PrepareDataDir(n.DataDir); err != nil {
		if server.HasMember(n.DataDir) {
			return ln, err, nil
		}
		closeAll()
		return nil, nil, fmt.Errorf("--data-dir %q: %w", n.DataDir, err)
	}
	return ln, nil, nil
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

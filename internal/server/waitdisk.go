package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// A member whose disk breaks stops (etcd cannot go on once a write it
// accepted fails), and a supervisor starts it again. If it then exited at
// once because the disk is still broken, the supervisor would loop. So a
// data dir that holds a member but cannot be written makes regd wait
// instead: it answers on its REST port (healthz 200, everything else 503
// storage_unwritable), checks the disk every DataDirRetry, and starts the
// member once the disk works. A data dir without a member is a fresh start
// and a wrong --data-dir is likelier than a broken disk, so that still
// fails at once (see HasMember).

// DataDirRetry is how often WaitForDataDir looks at the disk again.
const DataDirRetry = time.Second

// waitRetryAfter is the Retry-After of the waiting answers, in seconds:
// a few looks at the disk, not a hammering client.
const waitRetryAfter = "5"

// errWaitingForDisk is every answer but /healthz while regd waits.
var errWaitingForDisk = &registry.Error{
	Kind:    registry.KindUnavailable,
	Code:    registry.CodeStorageUnwritable,
	Message: "this node cannot write its data dir; it starts once the disk is repaired",
}

// WaitForDataDir serves the waiting answers on ln (over TLS when tlsCfg is
// set, as the real server will) until dir holds a member and passes
// PrepareDataDir (true), or ctx ends (false). cause is why the data dir was
// found unusable (PrepareDataDir's error), for the log line. ln stays open for the real server
// either way.
func WaitForDataDir(ctx context.Context, lg *zap.Logger, dir string, ln net.Listener, tlsCfg *tls.Config, cause error) bool {
	lg.Error("data dir is not writable; answering 503 and waiting for it before starting the member",
		zap.String("data-dir", dir), zap.Error(cause))
	hl := &heldListener{Listener: ln}
	var serveOn net.Listener = hl
	if tlsCfg != nil {
		serveOn = tls.NewListener(hl, tlsCfg)
	}
	srv := &http.Server{Handler: waitingHandler(), ReadHeaderTimeout: readHeaderTimeout, MaxHeaderBytes: maxHeaderBytes}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(serveOn); !errors.Is(err, http.ErrServerClosed) {
			lg.Warn("the REST port stopped answering while waiting for the data dir", zap.Error(err))
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
		hl.release()
	}()
	t := time.NewTicker(DataDirRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		// The member's data first: while an operator has the disk
		// unmounted, the mount point itself is writable, and starting
		// there would make etcd bootstrap an empty member.
		if !HasMember(dir) {
			continue
		}
		if err := PrepareDataDir(dir); err == nil {
			lg.Info("data dir is writable again; starting the member", zap.String("data-dir", dir))
			return true
		}
	}
}

// waitingHandler answers while the member waits for its disk: the process
// is alive (/healthz 200), and nothing else can be served.
func waitingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		}
		w.Header().Set("Retry-After", waitRetryAfter)
		api.WriteError(w, r, errWaitingForDisk)
	})
}

// heldListener lets an http.Server stop accepting on a listener without
// closing it: Close makes the pending Accept time out, which a shutting
// down server takes as its end, and release makes the listener usable again.
type heldListener struct {
	net.Listener
	closed atomic.Bool
}

type deadliner interface{ SetDeadline(time.Time) error }

func (l *heldListener) Accept() (net.Conn, error) {
	if l.closed.Load() {
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *heldListener) Close() error {
	l.closed.Store(true)
	if d, ok := l.Listener.(deadliner); ok {
		return d.SetDeadline(time.Now())
	}
	return nil
}

func (l *heldListener) release() {
	if d, ok := l.Listener.(deadliner); ok {
		_ = d.SetDeadline(time.Time{})
	}
}

package registry

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// resyncPause is the pause between a broken watch and the reload.
const resyncPause = 250 * time.Millisecond

// Run keeps the view in sync until ctx ends. After a broken watch it loads
// the registry again and turns the difference into events, so subscribers
// never miss a change silently.
func (v *View) Run(ctx context.Context) {
	defer v.close()
	for ctx.Err() == nil {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		v.lg.Warn("registry view resyncing", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(resyncPause):
		}
	}
}

// follow loads the registry and then applies the watch from exactly that
// revision on, one revision at a time, until the watch breaks.
func (v *View) follow(ctx context.Context) error {
	// A serializable snapshot: the view must fill even on a member that
	// has lost its quorum; the watch continues from exactly this state.
	resp, err := v.st.cli.Get(ctx, v.lo, clientv3.WithRange(v.hi), clientv3.WithSerializable())
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	v.mu.Lock()
	if v.memberID == 0 {
		v.memberID = resp.Header.MemberId
	}
	v.mu.Unlock()
	v.load(ctx, rev, resp.Kvs)

	// No WithRequireLeader: on a member cut off from its quorum the view
	// keeps serving what it has (stale reads); the API decides what a
	// leaderless member may answer.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher := v.st.cli.Watcher
	v.mu.Lock()
	v.progress = func() { _ = watcher.RequestProgress(wctx) }
	v.mu.Unlock()
	wch := watcher.Watch(wctx, v.lo, clientv3.WithRange(v.hi), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return ErrCompacted
		}
		if err := wr.Err(); err != nil {
			return err
		}
		if wr.IsProgressNotify() {
			v.advance(wr.Header.Revision)
			continue
		}
		splitRevisions(wr.Events, func(rev int64, evs []*clientv3.Event) {
			v.apply(ctx, v.st.keys.decodeChanges(rev, evs))
		})
	}
	return ctx.Err()
}

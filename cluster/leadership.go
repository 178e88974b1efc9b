package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Backstop is how often leadership is re-checked when no notification
// arrives. LeaderChangedNotify can miss a change, and it never fires when the
// leader becomes none (a partitioned leader steps down silently), so the
// ticker bounds how long leader-only work can outlive lost leadership.
const Backstop = 200 * time.Millisecond

// Leadership follows raft leadership and runs leader-only work while this
// member leads. Each task gets a context that is cancelled the moment the
// member stops leading; Stop cancels and waits for all of them.
type Leadership struct {
	n     Node
	lg    *zap.Logger
	tasks []func(context.Context)

	leading atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// NewLeadership follows n's leadership.
func NewLeadership(n Node, lg *zap.Logger) *Leadership {
	return &Leadership{n: n, lg: lg, stop: make(chan struct{}), done: make(chan struct{})}
}

// OnLead registers a leader-only task; it does not run it. It must be
// called before Start. The task is started in each term in which this
// member leads and runs until its context ends, then returns; it may run on
// another member concurrently for a moment, so it must be idempotent.
func (l *Leadership) OnLead(task func(ctx context.Context)) { l.tasks = append(l.tasks, task) }

// Start begins following leadership.
func (l *Leadership) Start() { go l.loop() }

// IsLeader reports whether leader-only work is running here now.
func (l *Leadership) IsLeader() bool { return l.leading.Load() }

// Stop ends leader-only work and waits for it. Safe to call more than once,
// and before Start returns.
func (l *Leadership) Stop() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

func (l *Leadership) loop() {
	defer close(l.done)
	ticker := time.NewTicker(Backstop)
	defer ticker.Stop()
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
	)
	stopWork := func(reason string) {
		cancel()
		wg.Wait()
		cancel = nil
		l.leading.Store(false)
		l.lg.Info("leader-only work stopped", zap.String("reason", reason), zap.Uint64("term", l.n.Term()))
	}
	for {
		// Arm the notification before reading the state, so a change
		// between the two wakes the next select instead of being lost.
		changed := l.n.LeaderChanged()
		lead := l.n.Leader()
		leading := lead != 0 && lead == l.n.ID()
		switch {
		case leading && cancel == nil:
			var ctx context.Context
			ctx, cancel = context.WithCancel(context.Background())
			l.leading.Store(true)
			l.lg.Info("became leader; starting leader-only work", zap.Uint64("term", l.n.Term()), zap.String("member-id", fmt.Sprintf("%x", l.n.ID())))
			for _, task := range l.tasks {
				wg.Go(func() { task(ctx) })
			}
		case !leading && cancel != nil:
			stopWork(fmt.Sprintf("leader is now %x", lead))
		}
		select {
		case <-changed:
		case <-ticker.C:
		case <-l.stop:
			if cancel != nil {
				stopWork("shutting down")
			}
			return
		}
	}
}

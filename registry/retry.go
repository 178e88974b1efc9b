package registry

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
)

// Retrying requests caught by a leader change (issue 18).
//
// A rolling restart hands raft leadership from member to member, and each
// hand-over costs etcd requests in flight: the old leader drops proposals
// while it transfers leadership (raft's leadTransferee), so a follower that
// forwarded one waits for an answer that never comes; a ReadIndex waiting
// when the leader changes fails with "leader changed"; a lease renewal on a
// follower that has just lost its leader sleeps a full election timeout
// before it looks again. None of these says anything about the request
// itself, and the cluster is healthy a few milliseconds later. So the
// store runs each etcd call under retry: the call is cancelled the moment
// this member learns of a new leader, and it is made again (once a leader
// is known) while the request's deadline (Options.Timeout) lasts. The
// client sees one answer.
//
// Only calls that are safe to repeat go through it. Reads and lease
// renewals are. Writes are made safe (idempotent.go): a lease grant that
// is repeated leaves at worst an unused lease behind, which holds nothing
// and runs out; the registration and the deregistration transactions are
// conditional, so that a repeat after an attempt that was in fact applied
// changes nothing, and the answer is the one the applied attempt earned.

// Leadership is what the store needs to know of raft leadership: the
// member's view of it (node.Node implements it).
type Leadership interface {
	// Leader is the leader's member ID, 0 while none is known.
	Leader() uint64
	// LeaderChanged is closed at the next change to a known leader; a
	// new channel is needed after each change.
	LeaderChanged() <-chan struct{}
}

// Bounds of the retries. An attempt is normally answered in milliseconds;
// one that outlasts attemptShare of the request's deadline without a leader
// change lost its proposal some other way (a transfer that was abandoned,
// a message dropped on a broken peer stream) and is made again. The pause
// between attempts grows from retryPause to maxRetryPause, cut short by a
// leader change; leaderPoll is how often the wait for a leader looks again
// besides the notification (which never fires when the leader becomes
// none).
const (
	attemptShare  = 3
	retryPause    = 10 * time.Millisecond
	maxRetryPause = 200 * time.Millisecond
	leaderPoll    = 50 * time.Millisecond
)

var (
	errLeaderChanged  = errors.New("the raft leader changed during the attempt")
	errAttemptTimeout = errors.New("the attempt took too long")
)

// errShuttingDown answers requests that would have to wait or retry on a
// member that is shutting down: another member can serve them now.
func errShuttingDown(cause error) *Error {
	return &Error{Kind: KindUnavailable, Code: CodeUnavailable,
		Message: "this node is shutting down; send the request to another member", Err: cause}
}

// retryState is the store's retry bookkeeping.
type retryState struct {
	lead     Leadership // nil: no leader-change signal, only the bounds apply
	stopping chan struct{}
	stopOnce atomic.Bool
	retries  atomic.Int64
	// hook, set by tests only (export_test.go), sees every attempt that
	// succeeded; an error it returns replaces the answer, as if the reply
	// of an applied call had been lost.
	hook atomic.Pointer[func(attempt int) error]
}

// Shutdown makes requests in flight on this member that would wait for a
// leader or make another attempt answer 503 unavailable at once, so that
// their clients go to another member; attempts already under way finish.
// regd calls it when it starts shutting down.
func (s *Store) Shutdown() {
	if s.retry.stopOnce.CompareAndSwap(false, true) {
		close(s.retry.stopping)
	}
}

// Retries is the number of etcd calls made again after a leader change or
// a lost attempt (regd_store_retries_total).
func (s *Store) Retries() int64 { return s.retry.retries.Load() }

// do runs f until it succeeds, fails in a way that another attempt cannot
// change, or ctx ends (the request's deadline; then the error says the
// cluster did not answer in time). retried reports that f ran more than
// once: an earlier attempt may have been applied although it failed, which
// is what idempotent writes look at.
func (s *Store) do(ctx context.Context, f func(ctx context.Context) error) (retried bool, err error) {
	attemptTimeout := s.timeout / attemptShare
	pause := retryPause
	for attempt := 0; ; attempt++ {
		var changed <-chan struct{}
		if s.retry.lead != nil {
			// Armed before the attempt, so that a change while it runs
			// is never missed.
			changed = s.retry.lead.LeaderChanged()
			if err := s.waitLeader(ctx, changed); err != nil {
				return attempt > 0, err
			}
		}
		actx, cancel := context.WithCancelCause(ctx)
		tctx, cancelT := context.WithTimeoutCause(actx, attemptTimeout, errAttemptTimeout)
		done := make(chan struct{})
		if changed != nil {
			go func() {
				select {
				case <-changed:
					cancel(errLeaderChanged)
				case <-done:
				}
			}()
		}
		err = f(tctx)
		if h := s.retry.hook.Load(); h != nil && err == nil {
			err = (*h)(attempt)
		}
		close(done)
		cause := context.Cause(tctx)
		cancelT()
		cancel(nil)
		if err == nil {
			return attempt > 0, nil
		}
		if ctx.Err() != nil {
			return attempt > 0, deadline(ctx, err)
		}
		why := retryReason(err, cause)
		if why == "" {
			return attempt > 0, err
		}
		select {
		case <-s.retry.stopping:
			return attempt > 0, errShuttingDown(err)
		default:
		}
		s.retry.retries.Add(1)
		s.lg.Debug("retrying an etcd call", zap.String("reason", why), zap.Int("attempt", attempt+1), zap.Error(err))
		if why == "leader changed" {
			continue // a leader is known again, or waitLeader waits for one
		}
		// A refusal without a change yet (a proposal dropped during a
		// transfer, a leader being elected): wait for the change, or a
		// short pause.
		t := time.NewTimer(pause)
		select {
		case <-changed:
		case <-t.C:
		case <-s.retry.stopping:
		case <-ctx.Done():
		}
		t.Stop()
		pause = min(2*pause, maxRetryPause)
	}
}

// waitLeader returns at once while this member knows a leader, and
// otherwise waits until it learns of one (changed fires), the member
// shuts down, or ctx ends.
func (s *Store) waitLeader(ctx context.Context, changed <-chan struct{}) error {
	if s.retry.lead.Leader() != 0 {
		return nil
	}
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	for s.retry.lead.Leader() == 0 {
		select {
		case <-changed:
			return nil
		case <-tick.C:
		case <-s.retry.stopping:
			return errShuttingDown(nil)
		case <-ctx.Done():
			return deadline(ctx, rpctypes.ErrNoLeader)
		}
	}
	return nil
}

// deadline is the error of a request whose deadline (or caller) ended
// while it was retried: the context's error, with the last attempt's for
// the log.
func deadline(ctx context.Context, last error) error {
	return errors.Join(ctx.Err(), last)
}

// leaderErrors are etcd's answers that say nothing about the request, only
// that leadership was moving: "leader changed" (a ReadIndex or a lease
// lookup overtaken by a new leader), "no leader", "not leader", and the
// timeouts etcd gives when a proposal was lost with the old leader.
var leaderErrors = []error{
	rpctypes.ErrLeaderChanged,
	rpctypes.ErrNoLeader,
	rpctypes.ErrNotLeader,
	rpctypes.ErrTimeout,
	rpctypes.ErrTimeoutDueToLeaderFail,
	rpctypes.ErrTimeoutDueToConnectionLost,
	rpctypes.ErrTimeoutWaitAppliedIndex,
}

// Errors of raft and of etcd's lessor that etcd does not translate: they
// reach the client as gRPC code Unknown with their text.
const (
	// raft.ErrProposalDropped: a leader transferring leadership, or a
	// member without a leader, refused the proposal; nothing was applied.
	msgProposalDropped = "raft proposal dropped"
	// lease.ErrNotPrimary: a renewal reached a member that has just
	// stopped leading.
	msgNotPrimary = "not a primary lessor"
)

// retryReason says why a failed attempt is worth another, or "" when it
// is not. cause is the attempt context's cause: the store cancels an
// attempt itself when the leader changes or the attempt takes too long.
func retryReason(err, cause error) string {
	switch {
	case errors.Is(cause, errLeaderChanged):
		return "leader changed"
	case errors.Is(cause, errAttemptTimeout):
		return "attempt timed out"
	}
	desc := rpctypes.ErrorDesc(err)
	for _, le := range leaderErrors {
		if errors.Is(err, le) || desc == le.Error() {
			return "etcd: " + desc
		}
	}
	if desc == msgProposalDropped || desc == msgNotPrimary {
		return "etcd: " + desc
	}
	return ""
}

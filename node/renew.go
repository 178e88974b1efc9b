package node

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Lease renewals, where they are cheapest.
//
// A renewal is not a raft write: only the leader's lessor keeps deadlines,
// so every renewal ends there. etcd gets it there from a follower as one
// HTTP request between members per renewal (EtcdServer.LeaseRenew →
// leasehttp.RenewHTTP), which costs the cluster about five times what the
// same renewal costs at the leader (BenchmarkLeaseRenewal: 104–121 µs
// against 11–25 µs). A follower instead keeps a few LeaseKeepAlive streams
// open to the leader's advertised client URLs, as an etcd client would,
// and pipelines its renewals over them: the leader answers each from its
// lessor. The leader itself renews in process, without a client.
//
// Every fast path falls back to the renewal regd made before (the
// in-process client's KeepAliveOnce, which etcd forwards), so a renewal
// never fails for want of a stream: while the streams to a new leader are
// being opened, after a stream broke, or when the leader's client URLs
// cannot be dialled (a TLS set-up the member's own certificate does not
// satisfy, a unix socket).

// renewStreams is how many LeaseKeepAlive streams a follower keeps open to
// the leader. The leader serves each stream's renewals one after another
// (etcd's LeaseServer.leaseKeepAlive), and a renewal of a lease past its
// deadline but not revoked yet waits there for the revocation (etcd's
// lessor.Renew), holding up the renewals behind it on its stream: a
// renewal goes to the stream with the fewest waiting and skips one that is
// held up (renewStuck). The batch heartbeat's 128 renewals in flight on a
// node are then at most about 8 deep on a stream.
const renewStreams = 16

// renewKeepalive: gRPC pings the leader after this long without traffic on
// the connection and gives it renewKeepaliveTimeout to answer, so a
// connection that went silent (a dropped route, a firewall's forgotten
// entry) is noticed although the leader stays the leader. etcd accepts
// pings every 5 s (--grpc-keepalive-min-time).
const (
	renewKeepalive        = 10 * time.Second
	renewKeepaliveTimeout = 5 * time.Second
)

// renewRetryAfter is how long a follower renews the old way after it failed
// to reach the leader over a stream, before it tries again.
const renewRetryAfter = 5 * time.Second

// RenewLease renews lease id once and returns the seconds it now has, as
// etcd's LeaseKeepAlive does; rpctypes.ErrLeaseNotFound when the lease does
// not exist. Other errors are the in-process client's (clientv3's), so a
// caller sees what KeepAliveOnce would have returned.
func (n *Node) RenewLease(ctx context.Context, id int64) (int64, error) {
	ttl, local, err := n.renewFast(ctx, id)
	if err == nil {
		n.renewer.counted(local)
		if ttl <= 0 {
			return 0, rpctypes.ErrLeaseNotFound
		}
		return ttl, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	n.renewer.fallback.Add(1)
	ka, err := n.client.KeepAliveOnce(ctx, clientv3.LeaseID(id))
	if err != nil {
		return 0, err
	}
	return ka.TTL, nil
}

// renewFast renews id without etcd's per-renewal forwarding: in process on
// the leader (local), over a stream to the leader on a follower. ttl 0 with
// a nil error: the lease does not exist. An error: use the slow path.
func (n *Node) renewFast(ctx context.Context, id int64) (ttl int64, local bool, err error) {
	if n.IsLeader() {
		n.renewer.drop() // streams to a former leader are not needed now
		ttl, err := n.etcd.Server.LeaseRenew(ctx, lease.LeaseID(id))
		if errors.Is(err, lease.ErrLeaseNotFound) {
			return 0, true, nil
		}
		return ttl, true, err
	}
	leader := n.Leader()
	if leader == 0 {
		return 0, false, errNoStream
	}
	ttl, err = n.renewer.link(n, leader).renew(ctx, id)
	return ttl, false, err
}

var errNoStream = errors.New("no lease stream to the leader")

// RenewalCounts counts this member's renewals by the path they took since
// it started (regd_lease_renewals_total): Local at the leader in process,
// Stream over a follower's stream to the leader, Fallback through the
// in-process client (etcd forwards a follower's to the leader).
type RenewalCounts struct {
	Local, Stream, Fallback int64
}

// Renewals returns how many renewals took each path.
func (n *Node) Renewals() RenewalCounts {
	return RenewalCounts{
		Local:    n.renewer.local.Load(),
		Stream:   n.renewer.stream.Load(),
		Fallback: n.renewer.fallback.Load(),
	}
}

// renewer holds this member's streams to the current leader.
type renewer struct {
	local, stream, fallback atomic.Int64

	mu  sync.Mutex
	cur *leaderLink
	// hasLink: cur != nil, read without mu on the leader's path.
	hasLink atomic.Bool
	// down: the last link to leader failed; the slow path until retryAt.
	down    uint64
	retryAt time.Time
	closed  bool
	// logged: the last failure to open streams that was logged, so that
	// one that repeats every renewRetryAfter is logged once.
	logged string
}

// link returns the streams to leader, opening them in the background (and
// closing those to a former leader) when they are not there yet; until
// they are, its renew answers errNoStream.
func (r *renewer) link(n *Node, leader uint64) *leaderLink {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil && r.cur.leader == leader && !r.cur.broken() {
		return r.cur
	}
	if r.cur != nil {
		if r.cur.leader == leader && r.cur.broken() {
			r.down, r.retryAt = leader, time.Now().Add(renewRetryAfter)
		}
		r.cur.close()
		r.cur = nil
		r.hasLink.Store(false)
	}
	if r.closed || (r.down == leader && time.Now().Before(r.retryAt)) {
		return nil
	}
	l := &leaderLink{leader: leader, ready: make(chan struct{}), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	r.cur = l
	r.hasLink.Store(true)
	go l.open(ctx, n, r)
	return l
}

// drop closes the streams, if any: this member is the leader now.
func (r *renewer) drop() {
	if !r.hasLink.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.cur.close()
		r.cur = nil
		r.hasLink.Store(false)
	}
}

// logOnce logs a failure to open streams unless it is the one logged last.
func (r *renewer) logOnce(lg *zap.Logger, leader string, err error) {
	msg := leader + ": " + err.Error()
	r.mu.Lock()
	again := r.logged == msg
	r.logged = msg
	r.mu.Unlock()
	if !again {
		lg.Warn("lease renewals go through etcd's forwarding: no stream to the leader",
			zap.String("leader", leader), zap.Error(err))
	}
}

// counted counts a renewal made on a fast path.
func (r *renewer) counted(leader bool) {
	if leader {
		r.local.Add(1)
	} else {
		r.stream.Add(1)
	}
}

// close closes the streams and waits until their connection is closed.
func (r *renewer) close() {
	r.mu.Lock()
	r.closed = true
	l := r.cur
	r.cur = nil
	r.hasLink.Store(false)
	r.mu.Unlock()
	if l != nil {
		l.close()
		<-l.closed
	}
}

// leaderLink is one gRPC connection to one leader and its streams.
type leaderLink struct {
	leader uint64
	cancel context.CancelFunc
	ready  chan struct{} // closed once open has finished, well or not
	closed chan struct{} // closed once close has closed the connection
	conn   *grpc.ClientConn
	// streams is set before ready is closed and not changed after.
	streams []*renewStream
	next    atomic.Uint32
	failed  atomic.Bool
}

// renew sends id over one of the streams and waits for its answer.
func (l *leaderLink) renew(ctx context.Context, id int64) (int64, error) {
	if l == nil {
		return 0, errNoStream
	}
	select {
	case <-l.ready:
	default:
		return 0, errNoStream
	}
	if len(l.streams) == 0 {
		return 0, errNoStream
	}
	st := l.pick()
	if st == nil {
		// Every stream is held up (see renewStuck): this renewal takes
		// etcd's forwarding, where it waits for nothing else.
		return 0, errNoStream
	}
	ttl, err := st.renew(ctx, id)
	if err != nil && ctx.Err() == nil {
		// The stream broke: the next renewals take the slow path while
		// the link is opened again. A caller's deadline is not the
		// link's fault: a renewal of a lease past its deadline waits at
		// the leader until the lease is revoked, and a stream held up
		// so is skipped by pick (renewStuck), which also covers a
		// connection gone silent until gRPC's keepalive ends it.
		l.failed.Store(true)
	}
	return ttl, err
}

// renewStuck: a stream whose oldest renewal has waited this long is held
// up at the leader (a renewal of a lease past its deadline waits there for
// its revocation, seconds when thousands are due at once: etcd revokes
// about 1,000 a second); no renewal is queued behind it. A renewal
// answers in well under a millisecond otherwise.
const renewStuck = 200 * time.Millisecond

// pick returns the stream with the fewest renewals waiting that is not
// held up, looking from a rotating start so that ties spread; nil when
// every stream is held up.
func (l *leaderLink) pick() *renewStream {
	start := int(l.next.Add(1))
	now := time.Now()
	var best *renewStream
	least := -1
	for i := range l.streams {
		s := l.streams[(start+i)%len(l.streams)]
		s.mu.Lock()
		w := len(s.waiting)
		stuck := w > 0 && now.Sub(s.waiting[0].sent) >= renewStuck
		s.mu.Unlock()
		if stuck {
			continue
		}
		if least < 0 || w < least {
			best, least = s, w
			if w == 0 {
				break
			}
		}
	}
	return best
}

func (l *leaderLink) broken() bool { return l.failed.Load() }

// close ends the link's streams at once and its connection once open has
// finished (in the background: a renewal must not wait for it).
func (l *leaderLink) close() {
	l.cancel()
	go func() {
		defer close(l.closed)
		<-l.ready
		if l.conn != nil {
			_ = l.conn.Close()
		}
	}()
}

// open dials the leader's first advertised client URL and opens the
// streams. A failure is logged once and leaves the link broken.
func (l *leaderLink) open(ctx context.Context, n *Node, r *renewer) {
	defer close(l.ready)
	err := l.dial(ctx, n)
	if err != nil {
		l.failed.Store(true)
		if ctx.Err() == nil {
			r.logOnce(n.cfg.Logger, n.MemberName(l.leader), err)
		}
	}
}

func (l *leaderLink) dial(ctx context.Context, n *Node) error {
	var urls []string
	for _, m := range n.etcd.Server.Cluster().Members() {
		if uint64(m.ID) == l.leader {
			urls = m.ClientURLs
		}
	}
	if len(urls) == 0 {
		return errors.New("the leader advertises no client URL")
	}
	u, err := url.Parse(urls[0])
	if err != nil {
		return err
	}
	var creds credentials.TransportCredentials
	switch u.Scheme {
	case "http":
		creds = insecure.NewCredentials()
	case "https":
		// The member's own client certificate set-up, as etcd's gateway
		// dials its own client URLs: its certificate is presented when the
		// leader asks for one (--client-cert-auth), the leader's verified
		// against --trusted-ca-file (not at all with --auto-tls).
		tc, err := n.etcd.Config().ClientTLSInfo.ClientConfig()
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(tc)
	default:
		return errors.New("client URL scheme " + u.Scheme + " is not dialled for renewals")
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: renewKeepalive, Timeout: renewKeepaliveTimeout}))
	if err != nil {
		return err
	}
	l.conn = conn
	lc := pb.NewLeaseClient(conn)
	octx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	streams := make([]*renewStream, 0, renewStreams)
	for range renewStreams {
		// The stream lives as long as ctx; opening it must not wait
		// longer than octx.
		st, err := openStream(ctx, octx, lc)
		if err != nil {
			for _, s := range streams {
				s.fail(err)
			}
			return err
		}
		s := &renewStream{st: st, cluster: uint64(n.etcd.Server.Cluster().ID()), sendSlot: make(chan struct{}, 1)}
		go s.receive()
		streams = append(streams, s)
	}
	l.streams = streams
	return nil
}

// openStream opens a LeaseKeepAlive stream bound to ctx (the link's),
// giving up when octx ends first. gRPC opens a stream only once the
// connection is up, and waits for that as long as the stream's own context
// allows: an abandoned attempt ends when the link is closed.
func openStream(ctx, octx context.Context, lc pb.LeaseClient) (pb.Lease_LeaseKeepAliveClient, error) {
	type res struct {
		st  pb.Lease_LeaseKeepAliveClient
		err error
	}
	ch := make(chan res, 1)
	go func() {
		st, err := lc.LeaseKeepAlive(ctx, grpc.WaitForReady(true))
		ch <- res{st, err}
	}()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-octx.Done():
		return nil, octx.Err()
	}
}

// renewStream pipelines renewals over one LeaseKeepAlive stream. The leader
// answers a stream's requests in the order sent, so the answers are matched
// to the callers waiting in order. Sending and matching take different
// locks: a sender blocked by gRPC's flow control must not keep the
// receiver from draining the answers that would unblock it.
type renewStream struct {
	st      pb.Lease_LeaseKeepAliveClient
	cluster uint64 // this member's cluster: answers must come from it
	// sendSlot admits one Send at a time, queued in the order sent; a
	// channel, so that a caller waiting for it gives up at its deadline.
	sendSlot chan struct{}

	mu      sync.Mutex
	waiting []*renewCall
	err     error // set once, when the stream ends
}

type renewCall struct {
	id   int64
	sent time.Time
	done chan renewAnswer // buffered: the receiver never blocks on it
}

type renewAnswer struct {
	ttl int64
	err error
}

func (s *renewStream) renew(ctx context.Context, id int64) (int64, error) {
	c := &renewCall{id: id, sent: time.Now(), done: make(chan renewAnswer, 1)}
	select {
	case s.sendSlot <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		<-s.sendSlot
		return 0, err
	}
	s.waiting = append(s.waiting, c)
	s.mu.Unlock()
	// A Send blocked by flow control (a leader that stopped reading) ends
	// when the link's context does.
	err := s.st.Send(&pb.LeaseKeepAliveRequest{ID: id})
	<-s.sendSlot
	if err != nil {
		s.fail(err)
	}
	select {
	case a := <-c.done:
		return a.ttl, a.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// receive matches answers to callers until the stream ends, then fails
// every caller still waiting.
func (s *renewStream) receive() {
	for {
		resp, err := s.st.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		if h := resp.Header; h == nil || h.ClusterId != s.cluster {
			// An advertised URL that reaches another cluster's member:
			// its "not found" would be a false 404.
			s.fail(errors.New("lease stream answered by a member of another cluster"))
			return
		}
		s.mu.Lock()
		if len(s.waiting) == 0 || s.waiting[0].id != resp.ID {
			s.mu.Unlock()
			s.fail(errors.New("lease stream answered out of order"))
			return
		}
		c := s.waiting[0]
		s.waiting[0] = nil
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		c.done <- renewAnswer{ttl: resp.TTL}
	}
}

func (s *renewStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	for _, c := range s.waiting {
		c.done <- renewAnswer{err: err}
	}
	s.waiting = nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/internal/loadgen"
)

// nativeBackend is plain etcd through its own gRPC client (clientv3), as
// the Go code of etcd-based discovery does it: Grant + Put with the lease
// to register, KeepAliveOnce to renew, Get of the service's range to list,
// Watch to follow. One client per member, each pinned to its member, so
// that target t means the same member for every system.
type nativeBackend struct {
	clients []*clientv3.Client
	prefix  string
}

func newNativeBackend(urls []string, prefix string) (*nativeBackend, error) {
	n := &nativeBackend{prefix: prefix}
	for _, u := range urls {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{u},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			n.close()
			return nil, fmt.Errorf("etcd client for %s: %w", u, err)
		}
		n.clients = append(n.clients, c)
	}
	return n, nil
}

func (n *nativeBackend) close() {
	for _, c := range n.clients {
		c.Close()
	}
}

func (n *nativeBackend) name() string  { return "native" }
func (n *nativeBackend) ntargets() int { return len(n.clients) }

func (n *nativeBackend) key(service, id string) string { return n.prefix + service + "/" + id }

// serviceRange is [key, end) of the service's keys, as for the gateway.
func (n *nativeBackend) serviceRange(service string) (key, end string) {
	return n.prefix + service + "/", n.prefix + service + "0"
}

// grpcErr classifies a gRPC failure for the error counts.
func grpcErr(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	code := rpctypes.ErrorDesc(err)
	return &loadgen.StatusError{Class: "grpc", Msg: code}
}

func (n *nativeBackend) register(ctx context.Context, t int, in *inst, ttl int) error {
	c := n.clients[t]
	g, err := c.Grant(ctx, int64(ttl))
	if err != nil {
		return grpcErr(err)
	}
	in.lease = int64(g.ID)
	_, err = c.Put(ctx, n.key(in.service, in.id), in.addr, clientv3.WithLease(g.ID))
	return grpcErr(err)
}

func (n *nativeBackend) heartbeat(ctx context.Context, t int, in *inst) error {
	r, err := n.clients[t].KeepAliveOnce(ctx, clientv3.LeaseID(in.lease))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return &loadgen.StatusError{Class: "ttl0", Msg: "keepalive of an unknown lease"}
		}
		return grpcErr(err)
	}
	if r.TTL <= 0 {
		return &loadgen.StatusError{Class: "ttl0", Msg: "keepalive of an unknown lease"}
	}
	return nil
}

func (n *nativeBackend) list(ctx context.Context, t int, service string) error {
	_, err := n.count(ctx, t, service)
	return err
}

func (n *nativeBackend) count(ctx context.Context, t int, service string) (int, error) {
	key, end := n.serviceRange(service)
	r, err := n.clients[t].Get(ctx, key, clientv3.WithRange(end))
	if err != nil {
		return 0, grpcErr(err)
	}
	if int(r.Count) != len(r.Kvs) {
		return 0, fmt.Errorf("range returned %d of %d keys", len(r.Kvs), r.Count)
	}
	return len(r.Kvs), nil
}

func (n *nativeBackend) deregister(ctx context.Context, t int, in *inst) error {
	if in.lease == 0 {
		return nil
	}
	_, err := n.clients[t].Revoke(ctx, clientv3.LeaseID(in.lease))
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return grpcErr(err)
	}
	return nil
}

func (n *nativeBackend) watch(ctx context.Context, t int, service string, ready func(), onEvent func(string, time.Time)) error {
	key, end := n.serviceRange(service)
	ch := n.clients[t].Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRange(end), clientv3.WithCreatedNotify())
	created := false
	for resp := range ch {
		at := time.Now()
		if err := resp.Err(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return grpcErr(err)
		}
		if resp.Created && !created {
			created = true
			ready()
			continue
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut {
				onEvent(strings.TrimPrefix(string(ev.Kv.Key), key), at)
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch channel closed")
}

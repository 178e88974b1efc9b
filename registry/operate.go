package registry

import (
	"context"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberAdd is the body of POST /v1/cluster/members.
type MemberAdd struct {
	// Name is the new member's --name: 1-64 characters of
	// [A-Za-z0-9._-], unique in the cluster.
	Name     string   `json:"name"`
	PeerURLs []string `json:"peer_urls"`
	// Learner adds it as a non-voting learner, to be promoted once it has
	// caught up (the safe way to grow a cluster; etcd allows one learner).
	Learner bool `json:"learner"`
}

// MemberAdded is the answer of POST /v1/cluster/members: the member, and
// how to start it.
type MemberAdded struct {
	Member MemberStatus `json:"member"`
	// InitialCluster is the exact --initial-cluster of the new member:
	// every member's name=peer-url, the new one's included.
	InitialCluster string `json:"initial_cluster"`
	// Flags start the new member, one "--flag=value" each. Values in
	// angle brackets (<client-url>, <host:port>, <dir>) are the new
	// member's own, to fill in.
	Flags []string `json:"flags"`
}

// Export is every instance of the registry at one revision, as GET
// /v1/export answers.
type Export struct {
	Instances []Instance `json:"instances"` // sorted by service, then id
	Revision  int64      `json:"revision"`
}

// Export reads every instance at one revision, linearizably: the keys
// under the prefix and the meta records in one transaction.
func (s *Store) Export(ctx context.Context) (Export, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Prefix, clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.MetaAll(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return Export{}, AsError(err)
	}
	metas := map[string]meta{}
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		if m, ok := decodeMeta(kv); ok {
			metas[string(kv.Key[len(s.keys.MetaAll()):])] = m
		}
	}
	out := Export{Instances: []Instance{}, Revision: resp.Header.Revision}
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		service, id, ok := s.keys.ParseInstance(string(kv.Key))
		if !ok {
			continue
		}
		if in, ok := s.build(ctx, service, id, keyState(kv), metas[service+"/"+id]); ok {
			out.Instances = append(out.Instances, in)
		}
	}
	sort.Slice(out.Instances, func(i, j int) bool {
		a, b := out.Instances[i], out.Instances[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.ID < b.ID
	})
	return out, nil
}

package registry

import (
	"context"
	"encoding/json"
	"maps"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Patch is a JSON merge patch (RFC 7396) of an instance's status, weight
// and metadata: a member absent from the patch is left as it is, a member
// set to null is removed, which for status and weight means their default
// again (StatusUp, DefaultWeight), for metadata every pair, and for one
// metadata key that key. The API decodes the request body into a Patch;
// the Store checks and applies it.
type Patch struct {
	Status      *string // new status; nil: unchanged
	ResetStatus bool    // "status": null
	Weight      *int64  // new weight; nil: unchanged
	ResetWeight bool    // "weight": null
	// Metadata merges into the instance's metadata: a value sets its
	// key, nil removes it.
	Metadata      map[string]*string
	ResetMetadata bool // "metadata": null: remove every pair
}

// check validates what can be validated without the instance: the status,
// the weight's range, the metadata keys.
func (p Patch) check() error {
	if p.Status != nil {
		if _, err := ResolveStatus(p.Status); err != nil {
			return err
		}
	}
	if p.Weight != nil {
		if _, err := ResolveWeight(p.Weight); err != nil {
			return err
		}
	}
	for k := range p.Metadata {
		if err := validateMetaKey(k); err != nil {
			return Errorf(KindInvalid, CodeInvalidMetadata, "metadata key %s: %s", quote(k), err)
		}
	}
	return nil
}

// apply returns m with the patch applied, and checks the metadata that
// results (pairs and bytes, as a registration's).
func (p Patch) apply(m meta) (meta, error) {
	status := m.Status
	if status == "" {
		status = StatusUp
	}
	weight := int64(DefaultWeight)
	if m.Weight != nil {
		weight = *m.Weight
	}
	switch {
	case p.Status != nil:
		status = *p.Status
	case p.ResetStatus:
		status = StatusUp
	}
	switch {
	case p.Weight != nil:
		weight = *p.Weight
	case p.ResetWeight:
		weight = DefaultWeight
	}
	m.setLifecycle(status, weight)
	md := maps.Clone(m.Metadata)
	if p.ResetMetadata {
		md = nil
	}
	for k, v := range p.Metadata {
		if v == nil {
			delete(md, k)
			continue
		}
		if md == nil {
			md = make(map[string]string)
		}
		md[k] = *v
	}
	if len(md) == 0 {
		md = nil
	}
	if err := ValidateMetadata(md); err != nil {
		return meta{}, err
	}
	m.Metadata = md
	return m, nil
}

// Patch changes the instance's status, weight or metadata in place (a JSON
// merge patch, see Patch). Only the meta record is written, in a
// transaction guarded by the key's and the record's revisions: the lease,
// TTL and address stay, heartbeats go on, plain etcd clients see no change
// (the key is not written), and the expiry ledger sees no deletion. The
// write bumps the revision; watch streams get an `update` event. It
// returns the instance as patched.
//
// Errors: KindInvalid (a bad status, weight or metadata; nothing is
// written), KindNotFound (no such instance), KindConflict with
// CodePlainInstance for a key a plain etcd client wrote (regd keeps no
// record for it), KindConflict with CodeConflict after five lost races
// with re-registrations, KindUnavailable.
func (s *Store) Patch(ctx context.Context, service, id string, p Patch) (Instance, error) {
	return s.patch(ctx, service, id, p)
}

// patch is Patch with extra operations written in the same transaction
// (the drain handshake's observe request, observe.go).
func (s *Store) patch(ctx context.Context, service, id string, p Patch, extra ...clientv3.Op) (Instance, error) {
	if err := validateNames(service, id); err != nil {
		return Instance{}, err
	}
	if err := p.check(); err != nil {
		return Instance{}, err
	}
	if err := s.gate(); err != nil {
		return Instance{}, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	key, metaKey := s.keys.Instance(service, id), s.keys.Meta(service, id)
	// written is the record a failed attempt wrote, when the transaction
	// was tried more than once: it may have been applied (retry.go).
	var written *patchWrite
	for attempt := 0; attempt < 5; attempt++ {
		kv, metaKV, _, err := s.readInstance(ctx, service, id)
		if err != nil {
			return Instance{}, err
		}
		if kv == nil || !keyState(kv).Valid {
			return Instance{}, notFound(service, id)
		}
		m, ok := decodeMeta(metaKV)
		if !ok || !m.describes(kv.Lease) {
			return Instance{}, Errorf(KindConflict, CodePlainInstance,
				"instance %s of service %s was written by a plain etcd client; its status, weight and metadata cannot be changed (register it through the REST API to manage it)", quote(id), quote(service))
		}
		if written != nil && metaKV.ModRevision > written.after && string(metaKV.Value) == written.value {
			// An attempt that failed was applied: the record holds what
			// it wrote. Writing it again would be a second change.
			m.rev = metaKV.ModRevision
			m.Address = keyState(kv).Address
			return m.instance(service, id, kv.ModRevision), nil
		}
		next, err := p.apply(m)
		if err != nil {
			return Instance{}, err
		}
		buf, err := json.Marshal(next)
		if err != nil {
			return Instance{}, AsError(err)
		}
		ops := []clientv3.Op{clientv3.OpPut(metaKey, string(buf))}
		// The mirror follows the status: written back while up (with the
		// metadata as patched), gone otherwise.
		ops = append(ops, s.mirror(service, id, keyState(kv).Address, next.Status, next.Metadata, kv.Lease)...)
		ops = append(ops, extra...)
		var resp *clientv3.TxnResponse
		retried, err := s.do(ctx, func(ctx context.Context) error {
			var err error
			resp, err = s.cli.Txn(ctx).If(
				clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision),
				clientv3.Compare(clientv3.ModRevision(metaKey), "=", metaKV.ModRevision),
			).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return Instance{}, AsError(err)
		}
		if !resp.Succeeded {
			if retried {
				written = &patchWrite{value: string(buf), after: metaKV.ModRevision}
			}
			continue
		}
		next.rev = resp.Header.Revision
		next.Address = keyState(kv).Address
		return next.instance(service, id, kv.ModRevision), nil
	}
	return Instance{}, Errorf(KindConflict, CodeConflict, "instance %s of service %s kept changing during the update; try again", quote(id), quote(service))
}

// patchWrite is the meta record a patch's transaction wrote, and the
// record's revision it was guarded on.
type patchWrite struct {
	value string
	after int64
}

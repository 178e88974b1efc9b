package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultExpiryRetention is how many ledger entries are kept when nothing
// else is configured (--expiry-retention).
const DefaultExpiryRetention = 10000

// ErrCursorMoved means another consumer committed first (a deposed leader
// that has not noticed yet, or its successor): the consumer that gets it
// starts over from the durable cursor.
var ErrCursorMoved = errors.New("expiry cursor moved: another reporter is active")

// Ledger is the expiry ledger: the durable record of every expiry, and the
// cursor that says how far etcd's history has been consumed into it. It
// owns the keys under /_regd/expiry/ and the deletion rule's bookkeeping
// (meta records of removed instances, lease markers); cluster's reporter
// drives a Consumer on the leader, and every member reads the entries.
//
// State: Keys.ExpiryCursor holds the last revision consumed;
// Keys.ExpiryEntry(rev, service, id) one entry per expiry, keyed so that a
// replay of the same revision lands on the same key. See cluster/DESIGN.md.
type Ledger struct {
	st   *Store
	cli  *clientv3.Client
	keys Keys
	lg   *zap.Logger
}

// NewLedger returns the ledger of st's registry.
func NewLedger(st *Store) *Ledger {
	return &Ledger{st: st, cli: st.cli, keys: st.keys, lg: st.lg}
}

// cursor is the ledger's cursor as read: the revision consumed, and the
// cursor key's own ModRevision, which every ledger write compares on so that
// a consumer that lost leadership cannot write after its successor. Both
// are 0 before the first consumer ran.
type cursor struct{ rev, modRev int64 }

func (l *Ledger) readCursor(ctx context.Context) (cursor, error) {
	resp, err := l.cli.Get(ctx, l.keys.ExpiryCursor())
	if err != nil {
		return cursor{}, AsError(err)
	}
	kv := firstKV(resp.Kvs)
	if kv == nil {
		return cursor{}, nil
	}
	rev, err := strconv.ParseInt(string(kv.Value), 10, 64)
	if err != nil {
		return cursor{}, Errorf(KindInternal, CodeInternal, "expiry cursor %q is corrupt", kv.Value)
	}
	return cursor{rev: rev, modRev: kv.ModRevision}, nil
}

// Cursor is the last revision of history the ledger has consumed: every
// expiry at or below it is in the ledger.
func (l *Ledger) Cursor(ctx context.Context) (int64, error) {
	ctx, cancel := l.st.withTimeout(ctx)
	defer cancel()
	c, err := l.readCursor(ctx)
	return c.rev, err
}

// Revision is the cluster's current revision (Store.Revision).
func (l *Ledger) Revision(ctx context.Context) (int64, error) { return l.st.Revision(ctx) }

// CompactHistory compacts etcd's history up to target, but never past the
// cursor: history the consumer has not read yet is what it classifies
// deletions by. It returns the revision compacted to, 0 when there was
// nothing to compact. A target etcd had already compacted is no error.
func (l *Ledger) CompactHistory(ctx context.Context, target int64) (int64, error) {
	ctx, cancel := l.st.withTimeout(ctx)
	defer cancel()
	c, err := l.readCursor(ctx)
	if err != nil {
		return 0, err
	}
	target = min(target, c.rev)
	if target <= 0 {
		return 0, nil
	}
	if _, err := l.cli.Compact(ctx, target); err != nil {
		if isCompacted(err) {
			return target, nil
		}
		return 0, AsError(err)
	}
	return target, nil
}

// Expirations reads the ledger, newest first: at most q.Limit entries,
// of q.Service when set, below revision q.Before when set. A page never
// ends inside a revision (several instances on one lease expire at one
// revision): when the limit would cut one, the page ends before it, so
// that the next page, Before its last entry's revision, misses nothing; a
// single revision with more entries than the limit is returned whole.
func (l *Ledger) Expirations(ctx context.Context, q ExpirationQuery) ([]Expiration, error) {
	ctx, cancel := l.st.withTimeout(ctx)
	defer cancel()
	out := []Expiration{}
	if q.Limit <= 0 {
		return out, nil
	}
	start := l.keys.ExpiryLog()
	end := clientv3.GetPrefixRangeEnd(start)
	if q.Before > 0 {
		end = fmt.Sprintf("%s%020d", start, q.Before) // exclusive: entries of revisions below it
	}
	page := int64(q.Limit) + 1 // one more: does the limit cut a revision?
	if q.Service != "" && page < 1024 {
		page = 1024 // filtering: read ahead rather than one read per match
	}
	full := false
	// The first page is a linearizable read; the pages after it read this
	// member's store at that page's revision (one snapshot, no round trip
	// through the leader each): a filtered read of a long ledger takes
	// many pages, and a read index each ran out of the request's time
	// during a mass expiry (docs/scale/notes.md, target 3).
	var at []clientv3.OpOption
	for !full {
		opts := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(page)}, at...)
		resp, err := l.cli.Get(ctx, start, opts...)
		if err != nil && at != nil && isCompacted(err) {
			at = nil // compacted past the snapshot meanwhile: read on at the head
			continue
		}
		if err != nil {
			return nil, AsError(err)
		}
		if at == nil {
			at = []clientv3.OpOption{clientv3.WithRev(resp.Header.Revision), clientv3.WithSerializable()}
		}
		for _, kv := range resp.Kvs {
			var e Expiration
			if json.Unmarshal(kv.Value, &e) != nil || (q.Service != "" && e.Service != q.Service) {
				continue
			}
			if e.Cause == "" {
				e.Cause = ExpiryCauseTTL // entries of versions before causes
			}
			if len(out) >= q.Limit && e.Revision != out[len(out)-1].Revision {
				full = true
				break
			}
			out = append(out, e)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: continue below the last key read
	}
	if len(out) > q.Limit {
		// The entries past the limit share the revision of the last one
		// within it: end the page before that revision, unless it is all
		// the page holds.
		cut := len(out)
		for cut > 0 && out[cut-1].Revision == out[len(out)-1].Revision {
			cut--
		}
		if cut > 0 {
			out = out[:cut]
		}
	}
	return out, nil
}

// Trim deletes the oldest entries beyond keep and returns how many it
// deleted. It is idempotent: two trimmers at once delete the same range.
func (l *Ledger) Trim(ctx context.Context, keep int) (int64, error) {
	ctx, cancel := l.st.withTimeout(ctx)
	defer cancel()
	log := l.keys.ExpiryLog()
	count, err := l.cli.Get(ctx, log, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, AsError(err)
	}
	excess := count.Count - int64(keep)
	if excess <= 0 {
		return 0, nil
	}
	oldest, err := l.cli.Get(ctx, log, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(excess))
	if err != nil || len(oldest.Kvs) == 0 {
		return 0, AsError(err)
	}
	last := string(oldest.Kvs[len(oldest.Kvs)-1].Key)
	del, err := l.cli.Delete(ctx, log, clientv3.WithRange(last+"\x00"))
	if err != nil {
		return 0, AsError(err)
	}
	return del.Deleted, nil
}

// entryOp writes e to the ledger unless an entry for the same deletion is
// there already (a replay after a commit whose reply was lost): the nested
// transaction's Succeeded says whether this write recorded it.
func (l *Ledger) entryOp(e Expiration) (clientv3.Op, error) {
	buf, err := json.Marshal(e)
	if err != nil {
		return clientv3.Op{}, err
	}
	key := l.keys.ExpiryEntry(e.Revision, e.Service, e.ID)
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, string(buf))},
		nil,
	), nil
}

// commit writes ops and moves the cursor to rev, only if the cursor is
// still at c.modRev. It returns the cursor afterwards and the responses
// of ops, or ErrCursorMoved.
func (l *Ledger) commit(ctx context.Context, c cursor, rev int64, ops []clientv3.Op) (cursor, *clientv3.TxnResponse, error) {
	ops = append(ops[:len(ops):len(ops)], clientv3.OpPut(l.keys.ExpiryCursor(), strconv.FormatInt(rev, 10)))
	resp, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(l.keys.ExpiryCursor()), "=", c.modRev)).Then(ops...).Commit()
	if err != nil {
		return c, nil, AsError(err)
	}
	if !resp.Succeeded {
		return c, nil, ErrCursorMoved
	}
	return cursor{rev: rev, modRev: resp.Header.Revision}, resp, nil
}

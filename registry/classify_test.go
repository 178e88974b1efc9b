package registry_test

import (
	"testing"

	"github.com/regd/regd/registry"
)

// TestParseValue is the one table of what a value under the prefix must be
// to be an instance (contract v2, "Values written by plain etcd clients").
func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
		ok                bool
	}{
		{"host:port", "10.0.0.9:80", "10.0.0.9:80", true},
		{"DNS name", "db-1.internal:5432", "db-1.internal:5432", true},
		{"IPv6", "[2001:db8::1]:443", "[2001:db8::1]:443", true},
		{"trailing newline (echo | etcdctl put)", "10.0.0.9:80\n", "10.0.0.9:80", true},
		{"surrounding blanks", " \t10.0.0.9:80\r\n ", "10.0.0.9:80", true},
		{"naming endpoint", `{"Op":0,"Addr":"10.0.0.7:50051","Metadata":null}`, "10.0.0.7:50051", true},
		{"naming endpoint with metadata", `{"Op":0,"Addr":"10.0.0.7:50051","Metadata":{"zone":"a"}}`, "10.0.0.7:50051", true},
		{"naming endpoint without Op (the resolver reads 0)", `{"Addr":"10.0.0.7:50051"}`, "10.0.0.7:50051", true},
		{"naming endpoint, blanks around", "\n{\"Op\":0,\"Addr\":\"10.0.0.7:50051\"}\n", "10.0.0.7:50051", true},
		{"empty", "", "", false},
		{"blank", " \n", "", false},
		{"garbage", "not an address", "", false},
		{"no port", "10.0.0.9", "", false},
		{"port 0", "10.0.0.9:0", "", false},
		{"URL", "http://10.0.0.9:80", "", false},
		{"naming delete update (Op 1)", `{"Op":1,"Addr":"10.0.0.7:50051"}`, "", false},
		{"naming endpoint with a bad Addr", `{"Op":0,"Addr":"10.0.0.7"}`, "", false},
		{"naming endpoint with an empty Addr", `{"Op":0,"Addr":"","Metadata":{"a":1}}`, "", false},
		{"naming endpoint with blanks in Addr", `{"Op":0,"Addr":" 10.0.0.7:50051"}`, "", false},
		{"Op as a string", `{"Op":"0","Addr":"10.0.0.7:50051"}`, "", false},
		{"JSON that is no endpoint", `{"address":"10.0.0.7:50051"}`, "", false},
		{"JSON array", `["10.0.0.7:50051"]`, "", false},
		{"broken JSON", `{"Op":0,"Addr":"10.0.0.7:50051"`, "", false},
		{"a REST meta record", `{"address":"10.0.0.7:80","ttl":10,"lease":5}`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := registry.ParseValue([]byte(tc.value))
			if ok != tc.ok || got != tc.want {
				t.Fatalf("ParseValue(%q) = %q, %v; want %q, %v", tc.value, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestClassify is the deletion rule's table: one revision's changes in,
// the instances that left and why out. Nothing is read: the lease's end is
// its marker's deletion in the same revision.
func TestClassify(t *testing.T) {
	const l, other = 0x11, 0x22
	inst := func(lease int64) *registry.KeyState {
		return &registry.KeyState{Address: "10.0.0.1:80", Valid: true, Lease: lease, ModRevision: 5}
	}
	bad := &registry.KeyState{Valid: false, Lease: l}
	ended := func(ls ...int64) map[int64]bool {
		m := map[int64]bool{}
		for _, x := range ls {
			m[x] = true
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		change registry.InstanceChange
		ended  map[int64]bool
		want   registry.Cause // 0: not a removal
	}{
		{"lease ended with the key: expiry (or a plain client's revoke)", registry.InstanceChange{Deleted: true, Prev: inst(l)}, ended(l), registry.CauseExpired},
		{"deleted, its lease untouched: explicit (REST deregister, plain del)", registry.InstanceChange{Deleted: true, Prev: inst(l)}, nil, registry.CauseDeleted},
		{"deleted while another lease ended", registry.InstanceChange{Deleted: true, Prev: inst(l)}, ended(other), registry.CauseDeleted},
		{"deleted, no lease: never an expiry", registry.InstanceChange{Deleted: true, Prev: inst(0)}, ended(0), registry.CauseDeleted},
		{"overwritten with a value that is no instance", registry.InstanceChange{Now: registry.KeyState{Lease: l}, Prev: inst(l)}, nil, registry.CauseDeleted},
		{"overwritten with no instance while its lease ended elsewhere", registry.InstanceChange{Now: registry.KeyState{}, Prev: inst(l)}, ended(l), registry.CauseDeleted},
		{"moved to another lease (re-registration, plain put)", registry.InstanceChange{Now: *inst(other), Prev: inst(l)}, ended(l), 0},
		{"moved off any lease", registry.InstanceChange{Now: *inst(0), Prev: inst(l)}, nil, 0},
		{"created", registry.InstanceChange{Now: *inst(l)}, nil, 0},
		{"a value that was no instance, deleted at its lease's end", registry.InstanceChange{Deleted: true, Prev: bad}, ended(l), 0},
		{"a value that was no instance, made one", registry.InstanceChange{Now: *inst(l), Prev: bad}, nil, 0},
		{"history lost the previous value", registry.InstanceChange{Deleted: true}, ended(l), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.change.Service, tc.change.ID = "svc", "i1"
			got := registry.Classify(registry.Changes{Revision: 9, Instances: []registry.InstanceChange{tc.change}, EndedLeases: tc.ended})
			if tc.want == 0 {
				if len(got) != 0 {
					t.Fatalf("Classify = %+v, want no removal", got)
				}
				return
			}
			if len(got) != 1 || got[0].Cause != tc.want || got[0].Service != "svc" || got[0].ID != "i1" || got[0].Address != tc.change.Prev.Address || got[0].Lease != tc.change.Prev.Lease {
				t.Fatalf("Classify = %+v, want one removal of svc/i1 (%s) with its previous address and lease", got, tc.want)
			}
		})
	}

	// One revision, several keys: both keys of the ended lease expired, in
	// etcd's order; a key of another lease in the same revision did not.
	got := registry.Classify(registry.Changes{Revision: 9, EndedLeases: ended(l), Instances: []registry.InstanceChange{
		{Service: "a", ID: "1", Deleted: true, Prev: inst(l)},
		{Service: "a", ID: "2", Deleted: true, Prev: inst(l)},
		{Service: "b", ID: "1", Deleted: true, Prev: inst(other)},
	}})
	if len(got) != 3 || got[0].Cause != registry.CauseExpired || got[1].Cause != registry.CauseExpired || got[2].Cause != registry.CauseDeleted || got[0].ID != "1" || got[1].ID != "2" {
		t.Fatalf("Classify of one revision with three deletions = %+v", got)
	}
}

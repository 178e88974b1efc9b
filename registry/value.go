package registry

import (
	"bytes"
	"encoding/json"
)

// ParseValue reads the value of a key under the registry prefix as the
// contract says (v2, "Values written by plain etcd clients"): after trimming
// surrounding whitespace, either a valid address (host:port, as ValidateAddress
// accepts for REST) or an endpoint of etcd's gRPC naming
// (go.etcd.io/etcd/client/v3/naming/endpoints), {"Op":0,"Addr":"host:port",
// "Metadata":...}, whose Addr is then the address. It reports false for
// anything else: such a key is data of some other program, not an instance,
// and is neither listed, nor watched, nor reported when it expires.
//
// The naming JSON is read the way etcd's own resolver reads it (a JSON
// object decoded into {Op uint8, Addr string}, field names matched without
// regard to case, a missing Op meaning 0): Op 1 is etcd's "delete" update,
// which a resolver drops, so it is no instance either. REST registrations
// write the plain address, so their values always pass.
//
// This is the one place a value becomes an address: the view, Store.Get and
// Heartbeat, and the expiry ledger all call it.
func ParseValue(v []byte) (address string, ok bool) {
	t := bytes.TrimSpace(v)
	if len(t) > 0 && t[0] == '{' {
		var u struct {
			Op   uint8
			Addr string
		}
		if json.Unmarshal(t, &u) != nil || u.Op != 0 || ValidateAddress(u.Addr) != nil {
			return "", false
		}
		return u.Addr, true
	}
	a := string(t)
	if ValidateAddress(a) != nil {
		return "", false
	}
	return a, true
}

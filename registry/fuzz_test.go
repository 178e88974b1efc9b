package registry_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/regd/regd/registry"
)

// FuzzParseInstance feeds arbitrary etcd keys, as a plain client could write
// them under the prefix: parsing must never panic, and a key it accepts must
// round-trip and name a valid service and id.
func FuzzParseInstance(f *testing.F) {
	for _, seed := range []string{
		"/service/user/u1", "/service/user", "/service/a/b/c", "/service//x", "/service/bad name/x",
		"/service/../x", "/service/./x", "/other/user/u1", "/service/u/\x00", "/service/ü/x", "",
	} {
		f.Add(seed)
	}
	keys := registry.Keys{Prefix: "/service/"}
	f.Fuzz(func(t *testing.T, key string) {
		svc, id, ok := keys.ParseInstance(key)
		if !ok {
			return
		}
		if keys.Instance(svc, id) != key {
			t.Fatalf("ParseInstance(%q) = %q, %q: does not round-trip", key, svc, id)
		}
		if registry.ValidateService(svc) != nil || registry.ValidateID(id) != nil {
			t.Fatalf("ParseInstance(%q) accepted invalid names %q, %q", key, svc, id)
		}
	})
}

// FuzzValidateAddress: whatever is accepted is a dialable host:port.
func FuzzValidateAddress(f *testing.F) {
	for _, seed := range []string{
		"10.0.0.5:8080", "[::1]:80", "[fe80::1%eth0]:80", "host.example.com:1", "::1:80",
		"[1.2.3.4]:80", "host:0", "host:65536", "host:080", "256.1.1.1:80", "a..b:80", ":80", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if registry.ValidateAddress(addr) != nil {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			t.Fatalf("accepted %q but SplitHostPort fails: %v", addr, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			t.Fatalf("accepted %q with port %q", addr, port)
		}
		if strings.ContainsAny(addr, " /\n\r\t\x00") {
			t.Fatalf("accepted %q with a separator or control character", addr)
		}
	})
}

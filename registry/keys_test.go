package registry_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/regd/regd/registry"
)

func TestParseInstance(t *testing.T) {
	k := registry.Keys{Prefix: "/service/"}
	tests := []struct {
		name            string
		key             string
		wantOK          bool
		wantSvc, wantID string
	}{
		{"instance", "/service/user/u1", true, "user", "u1"},
		{"names with all allowed classes", "/service/A.b_c-9/x.Y_z-0", true, "A.b_c-9", "x.Y_z-0"},
		{"128-char names", "/service/" + strings.Repeat("s", 128) + "/" + strings.Repeat("i", 128), true, strings.Repeat("s", 128), strings.Repeat("i", 128)},
		{"no id", "/service/user", false, "", ""},
		{"empty id", "/service/user/", false, "", ""},
		{"nested", "/service/a/b/c", false, "", ""},
		{"bad service name", "/service/bad name/x", false, "", ""},
		{"bad id", "/service/user/bad id", false, "", ""},
		{"empty service", "/service//x", false, "", ""},
		{"dot-dot service", "/service/../x", false, "", ""},
		{"dot id", "/service/user/.", false, "", ""},
		{"129-char id", "/service/user/" + strings.Repeat("i", 129), false, "", ""},
		{"other prefix", "/other/user/u1", false, "", ""},
		{"prefix without slash", "/serviceuser/u1", false, "", ""},
		{"internal key", registry.InternalPrefix + "meta/user/u1", false, "", ""},
		{"the prefix itself", "/service/", false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, id, ok := k.ParseInstance(tc.key)
			if ok != tc.wantOK || svc != tc.wantSvc || id != tc.wantID {
				t.Fatalf("ParseInstance(%q) = %q, %q, %v; want %q, %q, %v", tc.key, svc, id, ok, tc.wantSvc, tc.wantID, tc.wantOK)
			}
		})
	}
}

func TestKeysLayout(t *testing.T) {
	k := registry.Keys{Prefix: "/service/"}
	tests := []struct {
		name string
		// check returns a description of what is wrong, or "".
		check func() string
	}{
		{"instance key is prefix/service/id", func() string {
			if got := k.Instance("user", "u1"); got != "/service/user/u1" {
				return "Instance = " + got
			}
			return ""
		}},
		{"instance key round-trips through ParseInstance", func() string {
			svc, id, ok := k.ParseInstance(k.Instance("user-b", "x"))
			if !ok || svc != "user-b" || id != "x" {
				return "round trip lost the names"
			}
			return ""
		}},
		{"service range of user does not cover user-b", func() string {
			if strings.HasPrefix(k.Instance("user-b", "x"), k.Service("user")) {
				return k.Service("user") + " is a prefix of " + k.Instance("user-b", "x")
			}
			return ""
		}},
		{"service range of user covers its instances", func() string {
			if !strings.HasPrefix(k.Instance("user", "x"), k.Service("user")) {
				return k.Service("user") + " is not a prefix of " + k.Instance("user", "x")
			}
			return ""
		}},
		{"the history range holds instances, meta records and lease markers", func() string {
			for _, p := range []string{"/service/", "/a/", "/A/", "/zz/", "/_s/"} {
				k := registry.Keys{Prefix: p}
				lo, hi := k.HistoryRange()
				in := func(key string) bool { return key >= lo && key < hi }
				for _, key := range []string{k.Instance("user", "u1"), k.Meta("user", "u1"), k.LeaseMarker(1), k.LeaseMarker(-1)} {
					if !in(key) {
						return fmt.Sprintf("prefix %s: %s not in [%q, %q)", p, key, lo, hi)
					}
				}
			}
			return ""
		}},
		{"lease markers name their lease in fixed-width hex", func() string {
			if got := k.LeaseMarker(0x694d9a3c1f5b6e0a); got != registry.InternalPrefix+"lease/694d9a3c1f5b6e0a" {
				return "LeaseMarker = " + got
			}
			if got := k.LeaseMarker(7); got != registry.InternalPrefix+"lease/0000000000000007" {
				return "LeaseMarker = " + got
			}
			return ""
		}},
		{"bookkeeping lives outside the registry prefix", func() string {
			for _, key := range []string{k.Meta("user", "u1"), k.MetaAll(), k.LeaseMarker(7), k.LeaseMarkers(), k.ExpiryCursor(), k.ExpiryEntry(5, "user", "u1")} {
				if strings.HasPrefix(key, k.Prefix) || !strings.HasPrefix(key, registry.InternalPrefix) {
					return key + " is not under " + registry.InternalPrefix + " only"
				}
			}
			return ""
		}},
		{"lease ids are decimal", func() string {
			if got := registry.FormatLease(7587887011316940554); got != "7587887011316940554" {
				return "FormatLease = " + got
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if msg := tc.check(); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

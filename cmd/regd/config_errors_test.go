package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestConfigErrors: every bad flag or variable is one line that names the
// flag and its value (and the variable it came from), and starts nothing.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		prefix string   // the error must start with this
		has    []string // and contain these
	}{
		// parse-level
		{name: "positional", args: []string{"foo"}, prefix: `unexpected argument "foo"`},
		{name: "REST on the DNS port", args: []string{"--dns-addr=127.0.0.1:8053", "--http-addr=127.0.0.1:8053"},
			prefix: `--dns-addr "127.0.0.1:8053": the same port as --http-addr "127.0.0.1:8053"`},
		{name: "peer port under a dual-stack wildcard", args: []string{"--listen-client-urls=http://[::]:7001", "--advertise-client-urls=http://x.example:7001", "--listen-peer-urls=http://127.0.0.1:7001", "--insecure"},
			prefix: `--listen-peer-urls "127.0.0.1:7001": the same port as --listen-client-urls "[::]:7001"`},
		{name: "positional after flags", args: []string{"--name", "a", "--", "bar"}, prefix: `unexpected argument "bar"`},
		{name: "unknown flag", args: []string{"--nope"}, prefix: "--nope: unknown flag"},
		{name: "flag without value", args: []string{"--name"}, prefix: "--name: needs a value"},
		{name: "bad int flag", args: []string{"--expiry-retention", "x"}, prefix: `--expiry-retention "x": must be a whole number`},
		{name: "int out of range", args: []string{"--max-conns=99999999999999999999"}, prefix: `--max-conns "99999999999999999999": out of range`},
		{name: "bad bool flag", args: []string{"--insecure=maybe"}, prefix: `--insecure "maybe": must be true or false`},
		{name: "bool takes no separate value", args: []string{"--insecure", "false"}, prefix: `unexpected argument "false"`},
		{name: "bad duration", args: []string{"--shutdown-timeout=soon"}, prefix: `--shutdown-timeout "soon": must be a duration`},
		{name: "three dashes", args: []string{"---name=x"}, prefix: `"---name=x": not a flag`},
		{name: "no name", args: []string{"-=x"}, prefix: `"-=x": not a flag`},
		{name: "flag value from env unparsable", env: map[string]string{"REGD_INSECURE": "yes please"}, prefix: `--insecure "yes please" (from REGD_INSECURE): must be true or false`},

		// health checks
		{name: "check-max-concurrent 0", args: []string{"--check-max-concurrent=0"}, prefix: `--check-max-concurrent "0": must be at least 1`},
		{name: "check-allowed-cidrs empty", args: []string{"--check-allowed-cidrs="}, prefix: `--check-allowed-cidrs "": no networks given`},
		{name: "check-allowed-cidrs bad network", args: []string{"--check-allowed-cidrs=10.0.0.0/8,10.0.0.0/33"}, prefix: `--check-allowed-cidrs "10.0.0.0/8,10.0.0.0/33": "10.0.0.0/33" is not a network`},
		{name: "check-allowed-cidrs name", env: map[string]string{"REGD_CHECK_ALLOWED_CIDRS": "intranet"}, prefix: `--check-allowed-cidrs "intranet" (from REGD_CHECK_ALLOWED_CIDRS): "intranet" is neither`},

		// --name
		{name: "name empty", args: []string{"--name="}, prefix: `--name "": `},
		{name: "name with equals", args: []string{"--name=a=b"}, prefix: `--name "a=b": `},
		{name: "name with comma", args: []string{"--name", "a,b"}, prefix: `--name "a,b": `},
		{name: "name from env", env: map[string]string{"REGD_NAME": "a,b"}, prefix: `--name "a,b"`, has: []string{"REGD_NAME"}},

		// --data-dir
		{name: "data-dir empty", args: []string{"--data-dir="}, prefix: `--data-dir "": must not be empty`},

		// --http-addr
		{name: "http-addr no port", args: []string{"--http-addr=127.0.0.1"}, prefix: `--http-addr "127.0.0.1": `},
		{name: "http-addr empty port", args: []string{"--http-addr=127.0.0.1:"}, prefix: `--http-addr "127.0.0.1:": `, has: []string{"missing port"}},
		{name: "http-addr named port", args: []string{"--http-addr=:http"}, prefix: `--http-addr ":http": `, has: []string{"not numeric"}},
		{name: "http-addr port range", args: []string{"--http-addr=:65536"}, prefix: `--http-addr ":65536": `, has: []string{"out of range"}},
		{name: "http-addr bad host", args: []string{"--http-addr=bad_host!:80"}, prefix: `--http-addr "bad_host!:80": `, has: []string{"invalid host"}},
		{name: "http-addr from env", env: map[string]string{"REGD_HTTP_ADDR": "nope"}, prefix: `--http-addr "nope" (from REGD_HTTP_ADDR): `},

		// URL lists, one per flag plus every URL rule
		{name: "listen-client-urls empty", args: []string{"--listen-client-urls="}, prefix: `--listen-client-urls "": must not be empty`},
		{name: "listen-client-urls empty entry", args: []string{"--listen-client-urls=http://a:1,,http://b:2"}, prefix: `--listen-client-urls "http://a:1,,http://b:2": `},
		{name: "advertise-client-urls bad scheme", args: []string{"--advertise-client-urls=ftp://a:1"}, prefix: `--advertise-client-urls "ftp://a:1": scheme must be http or https`},
		{name: "listen-peer-urls bad scheme", args: []string{"--listen-peer-urls=htp:/x"}, prefix: `--listen-peer-urls "htp:/x": scheme must be http or https`},
		{name: "initial-advertise-peer-urls no port", args: []string{"--initial-advertise-peer-urls=http://a"}, prefix: `--initial-advertise-peer-urls "http://a": `, has: []string{"missing port"}},
		{name: "url unparsable", args: []string{"--listen-peer-urls=http://a:1%zz"}, prefix: `--listen-peer-urls "http://a:1%zz": invalid URL`},
		{name: "url no host", args: []string{"--listen-peer-urls=http://:2380"}, prefix: `--listen-peer-urls "http://:2380": missing host`},
		{name: "url opaque", args: []string{"--listen-peer-urls=http:a:2380"}, prefix: `--listen-peer-urls "http:a:2380": missing host`},
		{name: "url port zero", args: []string{"--listen-peer-urls=http://a:0"}, prefix: `--listen-peer-urls "http://a:0": `, has: []string{"out of range"}},
		{name: "url port too big", args: []string{"--listen-peer-urls=http://a:70000"}, prefix: `--listen-peer-urls "http://a:70000": `, has: []string{"out of range"}},
		{name: "url path", args: []string{"--listen-peer-urls=http://a:1/x"}, prefix: `--listen-peer-urls "http://a:1/x": must not contain a path`},
		{name: "url query", args: []string{"--listen-peer-urls=http://a:1/?q=1"}, prefix: `--listen-peer-urls "http://a:1/?q=1": must not contain a query`},
		{name: "url empty query", args: []string{"--listen-peer-urls=http://a:1?"}, prefix: `--listen-peer-urls "http://a:1?": must not contain a query`},
		{name: "url fragment", args: []string{"--listen-peer-urls=http://a:1#f"}, prefix: `--listen-peer-urls "http://a:1#f": must not contain a fragment`},
		{name: "url user", args: []string{"--listen-peer-urls=http://u:p@a:1"}, prefix: `--listen-peer-urls "http://u:p@a:1": must not contain user information`},
		{name: "url duplicate", args: []string{"--listen-client-urls=http://a:1,http://A:1/"}, prefix: `--listen-client-urls "http://A:1/": duplicate URL`},
		{name: "url list from env", env: map[string]string{"REGD_LISTEN_PEER_URLS": "htp:/x"}, prefix: `--listen-peer-urls "htp:/x" (from REGD_LISTEN_PEER_URLS): scheme must be http or https`},

		// --initial-cluster
		{name: "initial-cluster empty", args: []string{"--initial-cluster="}, prefix: `--initial-cluster "": must not be empty`},
		{name: "initial-cluster no equals", args: []string{"--initial-cluster=http://a:1"}, prefix: `--initial-cluster "http://a:1": entry must be name=url`},
		{name: "initial-cluster empty name", args: []string{"--initial-cluster==http://a:1"}, prefix: `--initial-cluster "=http://a:1": entry must be name=url`},
		{name: "initial-cluster bad url", args: []string{"--initial-cluster=default=htp://a:1"}, prefix: `--initial-cluster "default=htp://a:1": scheme must be http or https`},
		{name: "initial-cluster no member", args: []string{"--name=x", "--initial-cluster=a=http://a:1,b=http://b:1"}, prefix: `--initial-cluster "a=http://a:1,b=http://b:1": no entry for member "x" (--name)`},
		{name: "initial-cluster duplicate", args: []string{"--initial-cluster=default=http://a:1,b=http://a:1"}, prefix: `--initial-cluster "default=http://a:1,b=http://a:1": duplicate URL "http://a:1"`},
		{name: "initial-cluster from env", args: []string{"--name=x"}, env: map[string]string{"REGD_INITIAL_CLUSTER": "a=http://a:1"}, prefix: `--initial-cluster "a=http://a:1" (from REGD_INITIAL_CLUSTER): no entry for member "x" (--name)`},

		// --initial-cluster-state / -token
		{name: "initial-cluster-state", args: []string{"--initial-cluster-state=old"}, prefix: `--initial-cluster-state "old": must be "new" or "existing"`},
		{name: "initial-cluster-state env", env: map[string]string{"REGD_INITIAL_CLUSTER_STATE": "old"}, prefix: `--initial-cluster-state "old" (from REGD_INITIAL_CLUSTER_STATE): must be "new" or "existing"`},
		{name: "initial-cluster-token empty", args: []string{"--initial-cluster-token="}, prefix: `--initial-cluster-token "": must not be empty`},

		// --prefix
		{name: "prefix root", args: []string{"--prefix=/"}, prefix: `--prefix "/": overlaps regd's internal keyspace "/_regd/"`},
		{name: "prefix internal", args: []string{"--prefix=/_regd/"}, prefix: `--prefix "/_regd/": overlaps`},
		{name: "prefix under internal", args: []string{"--prefix=/_regd/svc/"}, prefix: `--prefix "/_regd/svc/": overlaps`},
		{name: "prefix no leading slash", args: []string{"--prefix=svc/"}, prefix: `--prefix "svc/": must start and end with "/"`},
		{name: "prefix no trailing slash", args: []string{"--prefix=/svc"}, prefix: `--prefix "/svc": must start and end with "/"`},
		{name: "prefix empty", args: []string{"--prefix="}, prefix: `--prefix "": must start and end with "/"`},
		{name: "prefix space", args: []string{"--prefix=/my svc/"}, prefix: `--prefix "/my svc/": must contain only printable ASCII`},
		{name: "prefix non-ascii", args: []string{"--prefix=/sérvice/"}, prefix: `--prefix "/sérvice/": must contain only printable ASCII`},
		{name: "prefix control", args: []string{"--prefix=/a\tb/"}, prefix: `--prefix "/a\tb/": must contain only printable ASCII`},
		{name: "prefix env", env: map[string]string{"REGD_PREFIX": "/"}, prefix: `--prefix "/" (from REGD_PREFIX): overlaps`},

		// discovery: --dns-addr, --dns-domain, --dns-ttl, --grpc-naming-prefix
		{name: "dns-addr no port", args: []string{"--dns-addr=127.0.0.1"}, prefix: `--dns-addr "127.0.0.1": must be host:port`},
		{name: "dns-addr port range", args: []string{"--dns-addr=:70000"}, prefix: `--dns-addr ":70000": `, has: []string{"out of range"}},
		{name: "dns-addr bad host", args: []string{"--dns-addr=bad_host!:53"}, prefix: `--dns-addr "bad_host!:53": invalid host`},
		{name: "dns-addr from env", env: map[string]string{"REGD_DNS_ADDR": "x"}, prefix: `--dns-addr "x" (from REGD_DNS_ADDR): `},
		{name: "dns-domain root", args: []string{"--dns-domain=."}, prefix: `--dns-domain ".": must be a domain name`},
		{name: "dns-domain empty", args: []string{"--dns-domain="}, prefix: `--dns-domain "": must be a domain name`},
		{name: "dns-domain underscore", args: []string{"--dns-domain=my_zone."}, prefix: `--dns-domain "my_zone.": label "my_zone"`},
		{name: "dns-domain empty label", args: []string{"--dns-domain=a..b"}, prefix: `--dns-domain "a..b": label ""`},
		{name: "dns-domain long label", args: []string{"--dns-domain=" + strings.Repeat("a", 64)}, prefix: `--dns-domain "` + strings.Repeat("a", 64) + `": label`},
		{name: "dns-domain too long", args: []string{"--dns-domain=" + strings.Repeat("abcdefgh.", 30)}, prefix: `--dns-domain "`, has: []string{"at most 253"}},
		{name: "dns-domain escape", args: []string{`--dns-domain=a\.b`}, prefix: `--dns-domain "a\\.b": label "a\\"`},
		{name: "dns-domain space", args: []string{"--dns-domain=a b"}, prefix: `--dns-domain "a b": label "a b"`},
		{name: "dns-ttl negative", args: []string{"--dns-ttl=-1s"}, prefix: `--dns-ttl "-1s": must be whole seconds from 0s to 24h0m0s`},
		{name: "dns-ttl fraction", args: []string{"--dns-ttl=1500ms"}, prefix: `--dns-ttl "1.5s": must be whole seconds`},
		{name: "dns-ttl too long", args: []string{"--dns-ttl=25h"}, prefix: `--dns-ttl "25h": must be whole seconds`},
		{name: "dns-ttl no unit", args: []string{"--dns-ttl=5"}, prefix: `--dns-ttl "5": must be a duration`},
		{name: "naming prefix overlaps registry", args: []string{"--grpc-naming-prefix=/service/grpc/"}, prefix: `--grpc-naming-prefix "/service/grpc/": overlaps the registry prefix "/service/" (--prefix)`},
		{name: "naming prefix under which registry sits", args: []string{"--grpc-naming-prefix=/serv"}, prefix: `--grpc-naming-prefix "/serv": overlaps the registry prefix`},
		{name: "naming prefix equals registry", args: []string{"--grpc-naming-prefix=/svc/", "--prefix=/svc/"}, prefix: `--grpc-naming-prefix "/svc/": overlaps the registry prefix "/svc/"`},
		{name: "naming prefix internal", args: []string{"--grpc-naming-prefix=/_regd/grpc/"}, prefix: `--grpc-naming-prefix "/_regd/grpc/": overlaps regd's internal keyspace`},
		{name: "naming prefix above internal", args: []string{"--grpc-naming-prefix=/_"}, prefix: `--grpc-naming-prefix "/_": overlaps`},
		{name: "naming prefix root", args: []string{"--grpc-naming-prefix=/"}, prefix: `--grpc-naming-prefix "/": overlaps`},
		{name: "naming prefix space", args: []string{"--grpc-naming-prefix=/my grpc/"}, prefix: `--grpc-naming-prefix "/my grpc/": must contain only printable ASCII`},
		{name: "naming prefix control", args: []string{"--grpc-naming-prefix=/a\x00b/"}, prefix: `--grpc-naming-prefix "/a\x00b/": must contain only printable ASCII`},
		{name: "naming prefix long", args: []string{"--grpc-naming-prefix=/" + strings.Repeat("g", 300)}, prefix: `--grpc-naming-prefix "/` + strings.Repeat("g", 300) + `": must be at most 256`},
		{name: "naming prefix env", env: map[string]string{"REGD_GRPC_NAMING_PREFIX": "/service/"}, prefix: `--grpc-naming-prefix "/service/" (from REGD_GRPC_NAMING_PREFIX): overlaps`},

		// log levels
		{name: "log-level unknown", args: []string{"--log-level=verbose"}, prefix: `--log-level "verbose": must be one of debug, info, warn, error`},
		{name: "log-level fatal", args: []string{"--log-level=fatal"}, prefix: `--log-level "fatal": `},
		{name: "log-level empty", args: []string{"--log-level="}, prefix: `--log-level "": `},
		{name: "etcd-log-level panic", args: []string{"--etcd-log-level=panic"}, prefix: `--etcd-log-level "panic": `},
		{name: "log-level env", env: map[string]string{"REGD_LOG_LEVEL": "x"}, prefix: `--log-level "x" (from REGD_LOG_LEVEL): `},
		{name: "etcd-log-level env", env: map[string]string{"REGD_ETCD_LOG_LEVEL": "dpanic"}, prefix: `--etcd-log-level "dpanic" (from REGD_ETCD_LOG_LEVEL): `},

		// numbers
		{name: "expiry-retention zero", args: []string{"--expiry-retention=0"}, prefix: `--expiry-retention "0": must be at least 1`},
		{name: "expiry-retention negative", args: []string{"--expiry-retention=-5"}, prefix: `--expiry-retention "-5": must be at least 1`},
		{name: "history-retention too short", args: []string{"--history-retention=500ms"}, prefix: `--history-retention "500ms": must be at least 1s`},
		{name: "history-retention not a duration", args: []string{"--history-retention=1"}, prefix: `--history-retention "1": must be a duration with a unit`},
		{name: "expiry-retention env unparsable", env: map[string]string{"REGD_EXPIRY_RETENTION": "lots"}, prefix: `--expiry-retention "lots" (from REGD_EXPIRY_RETENTION): `},
		{name: "expiry-retention env zero", env: map[string]string{"REGD_EXPIRY_RETENTION": "0"}, prefix: `--expiry-retention "0" (from REGD_EXPIRY_RETENTION): must be at least 1`},
		{name: "shutdown-timeout zero", args: []string{"--shutdown-timeout=0"}, prefix: `--shutdown-timeout "0s": must be greater than 0`},
		{name: "shutdown-timeout negative", args: []string{"--shutdown-timeout=-1s"}, prefix: `--shutdown-timeout "-1s": must be greater than 0`},
		{name: "shutdown-timeout env unparsable", env: map[string]string{"REGD_SHUTDOWN_TIMEOUT": "10"}, prefix: `--shutdown-timeout "10" (from REGD_SHUTDOWN_TIMEOUT): `},
		{name: "min-free-bytes negative", args: []string{"--min-free-bytes=-1"}, prefix: `--min-free-bytes "-1": must not be negative (0 turns the guard off)`},
		{name: "min-free-bytes env unparsable", env: map[string]string{"REGD_MIN_FREE_BYTES": "1GiB"}, prefix: `--min-free-bytes "1GiB" (from REGD_MIN_FREE_BYTES): `},
		{name: "quota-backend-bytes negative", args: []string{"--quota-backend-bytes=-1"}, prefix: `--quota-backend-bytes "-1": must not be negative`},
		{name: "version env unparsable", env: map[string]string{"REGD_VERSION": "maybe"}, prefix: `--version "maybe" (from REGD_VERSION): `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := parseConfig(tt.args, mapEnv(tt.env), &out)
			if err == nil {
				t.Fatalf("parseConfig(%q, %v) = %+v, want error", tt.args, tt.env, c)
			}
			if c != nil {
				t.Errorf("config returned alongside error: %+v", c)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.prefix) {
				t.Errorf("error %q does not start with %q", msg, tt.prefix)
			}
			for _, h := range tt.has {
				if !strings.Contains(msg, h) {
					t.Errorf("error %q does not contain %q", msg, h)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Errorf("error %q wraps flag.ErrHelp", msg)
			}
			// The caller prints the error; nothing else should reach the user.
			if out.Len() != 0 {
				t.Errorf("unexpected output: %q", out.String())
			}
		})
	}
}

// TestConfigCORSOrigins: --cors-allowed-origins takes origins as browsers
// send them in the Origin header, or * alone; anything that could never
// match one is refused in one line naming the flag and the entry.
func TestConfigCORSOrigins(t *testing.T) {
	good := []struct {
		value string
		want  []string
	}{
		{"", nil},
		{"*", []string{"*"}},
		{" * ", []string{"*"}},
		{"https://ui.example", []string{"https://ui.example"}},
		{"http://127.0.0.1:3000,https://[::1]:8443", []string{"http://127.0.0.1:3000", "https://[::1]:8443"}},
		{"HTTPS://UI.Example:8443", []string{"https://ui.example:8443"}},
		{"https://a.example , http://localhost", []string{"https://a.example", "http://localhost"}},
		{"chrome-extension://abcdefghijklmnop", []string{"chrome-extension://abcdefghijklmnop"}},
	}
	for _, tt := range good {
		t.Run(tt.value, func(t *testing.T) {
			c, err := parseConfig([]string{"--cors-allowed-origins", tt.value}, mapEnv(nil), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Server.CORSAllowedOrigins, tt.want) {
				t.Errorf("CORSAllowedOrigins = %q, want %q", c.Server.CORSAllowedOrigins, tt.want)
			}
		})
	}
	bad := []struct {
		value, elem, reason string
	}{
		{"ui.example", "ui.example", "must be scheme://host[:port], or *"},
		{"://ui.example", "://ui.example", "must be scheme://host[:port], or *"},
		{"1http://ui.example", "1http://ui.example", `invalid scheme "1http"`},
		{"https://ui.example/", "https://ui.example/", "an origin has no path, query, fragment or user information"},
		{"https://ui.example/app", "https://ui.example/app", "an origin has no path"},
		{"https://ui.example?x=1", "https://ui.example?x=1", "an origin has no path"},
		{"https://ui.example#top", "https://ui.example#top", "an origin has no path"},
		{"https://me@ui.example", "https://me@ui.example", "an origin has no path"},
		{"https://", "https://", `invalid host ""`},
		{"https://*.example", "https://*.example", `invalid host "*.example"`},
		{"https://bad_host", "https://bad_host", `invalid host "bad_host"`},
		{"https://::1", "https://::1", `invalid host`},
		{"https://[10.0.0.1]", "https://[10.0.0.1]", `invalid host "[10.0.0.1]"`},
		{"https://ui.example:0", "https://ui.example:0", `port "0" out of range 1-65535`},
		{"https://ui.example:https", "https://ui.example:https", `port "https" is not numeric`},
		{"https://ui.example:", "https://ui.example:", "missing port"},
		{"https://ui.example:443", "https://ui.example:443", "drop the default port 443"},
		{"http://ui.example:80", "http://ui.example:80", "drop the default port 80"},
		{"*,https://ui.example", "https://ui.example", `"*" allows every origin; give it alone`},
		{"https://ui.example,*", "*", `"*" allows every origin; give it alone`},
		{"https://ui.example,https://UI.example", "https://UI.example", "duplicate origin"},
		{"https://a.example,,https://b.example", "https://a.example,,https://b.example", "empty entry in list"},
	}
	for _, tt := range bad {
		t.Run(tt.value, func(t *testing.T) {
			_, err := parseConfig([]string{"--cors-allowed-origins=" + tt.value}, mapEnv(nil), &bytes.Buffer{})
			want := fmt.Sprintf("--cors-allowed-origins %q: %s", tt.elem, tt.reason)
			if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line starting %q", err, want)
			}
		})
	}
	t.Run("from env", func(t *testing.T) {
		_, err := parseConfig(nil, mapEnv(map[string]string{"REGD_CORS_ALLOWED_ORIGINS": "ui.example"}), &bytes.Buffer{})
		if want := `--cors-allowed-origins "ui.example" (from REGD_CORS_ALLOWED_ORIGINS): `; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("err %v, want prefix %q", err, want)
		}
	})
}

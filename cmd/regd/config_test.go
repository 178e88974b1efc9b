package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/tlstest"
	"github.com/regd/regd/node"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func mustURLs(t *testing.T, ss ...string) []url.URL {
	t.Helper()
	var out []url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		out = append(out, *u)
	}
	return out
}

func TestConfigDefaults(t *testing.T) {
	var out bytes.Buffer
	c, err := parseConfig(nil, mapEnv(nil), &out)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	want := &Config{
		Name:                     "default",
		DataDir:                  "default.regd",
		HTTPAddr:                 "127.0.0.1:8080",
		ListenClientURLs:         mustURLs(t, "http://127.0.0.1:2379"),
		AdvertiseClientURLs:      mustURLs(t, "http://127.0.0.1:2379"),
		ListenPeerURLs:           mustURLs(t, "http://127.0.0.1:2380"),
		InitialAdvertisePeerURLs: mustURLs(t, "http://127.0.0.1:2380"),
		InitialCluster:           "default=http://127.0.0.1:2380",
		InitialClusterState:      "new",
		InitialClusterToken:      "regd-cluster",
		Prefix:                   "/service/",
		LogLevel:                 zapcore.InfoLevel,
		EtcdLogLevel:             zapcore.WarnLevel,
		ExpiryRetention:          10000,
		ShutdownTimeout:          10 * time.Second,
		ShowVersion:              false,
		MaxInFlight:              4096,
		MaxConns:                 8192,
		MaxWatchesPerClient:      64,
		MinFreeBytes:             node.DefaultMinFreeBytes,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if out.Len() != 0 {
		t.Errorf("unexpected output: %q", out.String())
	}
}

func TestConfigParse(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "data-dir follows name",
			args: []string{"--name", "n1"},
			check: func(t *testing.T, c *Config) {
				if c.DataDir != "n1.regd" {
					t.Errorf("DataDir = %q, want n1.regd", c.DataDir)
				}
				if c.InitialCluster != "n1=http://127.0.0.1:2380" {
					t.Errorf("InitialCluster = %q", c.InitialCluster)
				}
			},
		},
		{
			name: "data-dir follows name from env",
			env:  map[string]string{"REGD_NAME": "e1"},
			check: func(t *testing.T, c *Config) {
				if c.Name != "e1" || c.DataDir != "e1.regd" {
					t.Errorf("Name, DataDir = %q, %q", c.Name, c.DataDir)
				}
			},
		},
		{
			name: "explicit data-dir kept",
			args: []string{"--name=n1", "--data-dir=/var/lib/regd"},
			check: func(t *testing.T, c *Config) {
				if c.DataDir != "/var/lib/regd" {
					t.Errorf("DataDir = %q", c.DataDir)
				}
			},
		},
		{
			name: "initial-cluster from multiple peer urls",
			args: []string{"-name", "n2", "-initial-advertise-peer-urls", "http://10.0.0.2:2380, https://n2.example:2381/",
				"--listen-peer-urls", "http://127.0.0.1:2380,https://127.0.0.1:2381", "--peer-auto-tls"},
			check: func(t *testing.T, c *Config) {
				want := "n2=http://10.0.0.2:2380,n2=https://n2.example:2381/"
				if c.InitialCluster != want {
					t.Errorf("InitialCluster = %q, want %q", c.InitialCluster, want)
				}
				if !reflect.DeepEqual(c.InitialAdvertisePeerURLs, mustURLs(t, "http://10.0.0.2:2380", "https://n2.example:2381/")) {
					t.Errorf("InitialAdvertisePeerURLs = %v", c.InitialAdvertisePeerURLs)
				}
			},
		},
		{
			name: "explicit initial-cluster",
			args: []string{"--name", "b", "--initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380", "--initial-cluster-state", "existing"},
			check: func(t *testing.T, c *Config) {
				if c.InitialCluster != "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380" || c.InitialClusterState != "existing" {
					t.Errorf("InitialCluster, State = %q, %q", c.InitialCluster, c.InitialClusterState)
				}
			},
		},
		{
			name: "all flags",
			args: []string{
				"--name=x", "--data-dir=d", "--http-addr=:0",
				"--listen-client-urls=http://0.0.0.0:12379,https://[::1]:12379",
				"--advertise-client-urls=https://x.example:12379",
				"--listen-peer-urls=http://0.0.0.0:12380",
				"--initial-advertise-peer-urls=http://x.example:12380",
				"--initial-cluster-token=tok", "--prefix=/svc/a/",
				"--log-level=DEBUG", "--etcd-log-level=error",
				"--expiry-retention=1", "--shutdown-timeout=1500ms",
				"--auto-tls", "--insecure", "--max-inflight=10", "--max-conns=20", "--max-watches-per-client=3",
				"--min-free-bytes=0", "--quota-backend-bytes=1048576",
			},
			check: func(t *testing.T, c *Config) {
				want := &Config{
					Name:                     "x",
					DataDir:                  "d",
					HTTPAddr:                 ":0",
					ListenClientURLs:         mustURLs(t, "http://0.0.0.0:12379", "https://[::1]:12379"),
					AdvertiseClientURLs:      mustURLs(t, "https://x.example:12379"),
					ListenPeerURLs:           mustURLs(t, "http://0.0.0.0:12380"),
					InitialAdvertisePeerURLs: mustURLs(t, "http://x.example:12380"),
					InitialCluster:           "x=http://x.example:12380",
					InitialClusterState:      "new",
					InitialClusterToken:      "tok",
					Prefix:                   "/svc/a/",
					LogLevel:                 zapcore.DebugLevel,
					EtcdLogLevel:             zapcore.ErrorLevel,
					ExpiryRetention:          1,
					ShutdownTimeout:          1500 * time.Millisecond,
					ClientAutoTLS:            true,
					Insecure:                 true,
					MaxInFlight:              10,
					MaxConns:                 20,
					MaxWatchesPerClient:      3,
					MinFreeBytes:             -1,
					QuotaBackendBytes:        1 << 20,
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("\n got %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "http-addr hostname",
			args: []string{"--http-addr", "localhost:65535"},
			check: func(t *testing.T, c *Config) {
				if c.HTTPAddr != "localhost:65535" {
					t.Errorf("HTTPAddr = %q", c.HTTPAddr)
				}
			},
		},
		{
			name: "version",
			args: []string{"--version"},
			check: func(t *testing.T, c *Config) {
				if !c.ShowVersion {
					t.Error("ShowVersion = false")
				}
			},
		},
		{
			name: "version skips validation",
			args: []string{"-version", "--prefix=bad"},
			check: func(t *testing.T, c *Config) {
				if !c.ShowVersion {
					t.Error("ShowVersion = false")
				}
			},
		},
		{
			name: "version from env",
			env:  map[string]string{"REGD_VERSION": "true"},
			check: func(t *testing.T, c *Config) {
				if !c.ShowVersion {
					t.Error("ShowVersion = false")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, mapEnv(tt.env), &bytes.Buffer{})
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			tt.check(t, c)
		})
	}
}

func TestEnv(t *testing.T) {
	env := map[string]string{
		"REGD_NAME":                        "envname",
		"REGD_DATA_DIR":                    "/env/data",
		"REGD_HTTP_ADDR":                   "0.0.0.0:9090",
		"REGD_LISTEN_CLIENT_URLS":          "http://0.0.0.0:3379",
		"REGD_ADVERTISE_CLIENT_URLS":       "http://env.example:3379",
		"REGD_LISTEN_PEER_URLS":            "http://0.0.0.0:3380",
		"REGD_INITIAL_ADVERTISE_PEER_URLS": "http://env.example:3380",
		"REGD_INITIAL_CLUSTER":             "other=http://o.example:3380,envname=http://env.example:3380",
		"REGD_INITIAL_CLUSTER_STATE":       "existing",
		"REGD_INITIAL_CLUSTER_TOKEN":       "envtok",
		"REGD_PREFIX":                      "/envsvc/",
		"REGD_LOG_LEVEL":                   "warn",
		"REGD_ETCD_LOG_LEVEL":              "debug",
		"REGD_EXPIRY_RETENTION":            "42",
		"REGD_SHUTDOWN_TIMEOUT":            "3s",
		"REGD_INSECURE":                    "true",
		"REGD_MAX_INFLIGHT":                "100",
		"REGD_MAX_CONNS":                   "200",
		"REGD_MAX_WATCHES_PER_CLIENT":      "5",
	}

	t.Run("env fills unset flags", func(t *testing.T) {
		c, err := parseConfig(nil, mapEnv(env), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		want := &Config{
			Name:                     "envname",
			DataDir:                  "/env/data",
			HTTPAddr:                 "0.0.0.0:9090",
			ListenClientURLs:         mustURLs(t, "http://0.0.0.0:3379"),
			AdvertiseClientURLs:      mustURLs(t, "http://env.example:3379"),
			ListenPeerURLs:           mustURLs(t, "http://0.0.0.0:3380"),
			InitialAdvertisePeerURLs: mustURLs(t, "http://env.example:3380"),
			InitialCluster:           "other=http://o.example:3380,envname=http://env.example:3380",
			InitialClusterState:      "existing",
			InitialClusterToken:      "envtok",
			Prefix:                   "/envsvc/",
			LogLevel:                 zapcore.WarnLevel,
			EtcdLogLevel:             zapcore.DebugLevel,
			ExpiryRetention:          42,
			ShutdownTimeout:          3 * time.Second,
			Insecure:                 true,
			MaxInFlight:              100,
			MaxConns:                 200,
			MaxWatchesPerClient:      5,
			MinFreeBytes:             node.DefaultMinFreeBytes,
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("\n got %+v\nwant %+v", c, want)
		}
	})

	t.Run("flag beats env", func(t *testing.T) {
		c, err := parseConfig([]string{
			"--name", "flagname", "--initial-cluster", "flagname=http://f.example:3380",
			"--log-level", "error", "--expiry-retention", "7", "--prefix=/flag/",
		}, mapEnv(env), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Name != "flagname" || c.LogLevel != zapcore.ErrorLevel || c.ExpiryRetention != 7 ||
			c.Prefix != "/flag/" || c.InitialCluster != "flagname=http://f.example:3380" {
			t.Errorf("flags not preferred: %+v", c)
		}
		// Unset flags still come from the environment.
		if c.DataDir != "/env/data" || c.HTTPAddr != "0.0.0.0:9090" || c.InitialClusterToken != "envtok" {
			t.Errorf("env not applied to unset flags: %+v", c)
		}
	})

	t.Run("empty env is unset", func(t *testing.T) {
		c, err := parseConfig(nil, mapEnv(map[string]string{"REGD_NAME": "", "REGD_PREFIX": ""}), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Name != "default" || c.Prefix != "/service/" {
			t.Errorf("got %+v", c)
		}
	})

	t.Run("flag equal to default still beats env", func(t *testing.T) {
		c, err := parseConfig([]string{"--log-level=info"}, mapEnv(map[string]string{"REGD_LOG_LEVEL": "debug"}), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.LogLevel != zapcore.InfoLevel {
			t.Errorf("LogLevel = %v", c.LogLevel)
		}
	})
}

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
		{name: "positional after flags", args: []string{"--name", "a", "--", "bar"}, prefix: `unexpected argument "bar"`},
		{name: "unknown flag", args: []string{"--nope"}, prefix: "--nope: unknown flag"},
		{name: "flag without value", args: []string{"--name"}, prefix: "--name: needs a value"},
		{name: "bad int flag", args: []string{"--expiry-retention", "x"}, prefix: `--expiry-retention "x": `},

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
		{name: "expiry-retention env unparsable", env: map[string]string{"REGD_EXPIRY_RETENTION": "lots"}, prefix: `invalid value "lots" for --expiry-retention (from REGD_EXPIRY_RETENTION): `},
		{name: "expiry-retention env zero", env: map[string]string{"REGD_EXPIRY_RETENTION": "0"}, prefix: `--expiry-retention "0" (from REGD_EXPIRY_RETENTION): must be at least 1`},
		{name: "shutdown-timeout zero", args: []string{"--shutdown-timeout=0"}, prefix: `--shutdown-timeout "0s": must be greater than 0`},
		{name: "shutdown-timeout negative", args: []string{"--shutdown-timeout=-1s"}, prefix: `--shutdown-timeout "-1s": must be greater than 0`},
		{name: "shutdown-timeout env unparsable", env: map[string]string{"REGD_SHUTDOWN_TIMEOUT": "10"}, prefix: `invalid value "10" for --shutdown-timeout (from REGD_SHUTDOWN_TIMEOUT): `},
		{name: "min-free-bytes negative", args: []string{"--min-free-bytes=-1"}, prefix: `--min-free-bytes "-1": must not be negative (0 turns the guard off)`},
		{name: "min-free-bytes env unparsable", env: map[string]string{"REGD_MIN_FREE_BYTES": "1GiB"}, prefix: `invalid value "1GiB" for --min-free-bytes (from REGD_MIN_FREE_BYTES): `},
		{name: "quota-backend-bytes negative", args: []string{"--quota-backend-bytes=-1"}, prefix: `--quota-backend-bytes "-1": must not be negative`},
		{name: "version env unparsable", env: map[string]string{"REGD_VERSION": "maybe"}, prefix: `invalid value "maybe" for --version (from REGD_VERSION): `},
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

func TestFlagHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out bytes.Buffer
			c, err := parseConfig([]string{arg}, mapEnv(nil), &out)
			if !errors.Is(err, errHelp) || !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want errHelp", err)
			}
			if c != nil {
				t.Errorf("config = %+v, want nil", c)
			}
			usage := out.String()
			if !strings.HasPrefix(usage, "Usage: regd [flags]\n") {
				t.Errorf("usage does not start with the usage line:\n%s", usage)
			}
			for _, want := range []string{
				"REGD_<FLAG>",
				"--name", `(default "default")`,
				"--data-dir", `(default "<name>.regd")`,
				"--http-addr", `"127.0.0.1:8080"`,
				"--listen-client-urls", "--advertise-client-urls", "--listen-peer-urls",
				"--initial-advertise-peer-urls", "--initial-cluster ", "--initial-cluster-state",
				"--initial-cluster-token", "--prefix", "--log-level", "--etcd-log-level",
				"--expiry-retention", "(default 10000)", "--shutdown-timeout", "(default 10s)", "--version",
				"$REGD_LISTEN_CLIENT_URLS",
			} {
				if !strings.Contains(usage, want) {
					t.Errorf("usage lacks %q:\n%s", want, usage)
				}
			}
		})
	}
}

func TestConfigCheckDataDir(t *testing.T) {
	t.Run("new nested dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if err := checkDataDir(dir); err != nil {
			t.Fatalf("checkDataDir: %v", err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("probe file left behind: %v", entries)
		}
	})

	t.Run("existing dir", func(t *testing.T) {
		if err := checkDataDir(t.TempDir()); err != nil {
			t.Fatalf("checkDataDir: %v", err)
		}
	})

	t.Run("empty", func(t *testing.T) {
		err := checkDataDir("")
		if err == nil || !strings.HasPrefix(err.Error(), `--data-dir "": `) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("path is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkDataDir(f)
		if err == nil || !strings.HasPrefix(err.Error(), `--data-dir "`+f+`": not writable: `) {
			t.Fatalf("err = %v", err)
		}
	})

	for _, sub := range []string{"", "child"} {
		name := "read-only dir"
		if sub != "" {
			name = "under read-only dir"
		}
		t.Run(name, func(t *testing.T) {
			ro := t.TempDir()
			if err := os.Chmod(ro, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(ro, 0o700) })
			// Root (and some file systems) ignore permission bits.
			if f, err := os.CreateTemp(ro, "probe"); err == nil {
				f.Close()
				os.Remove(f.Name())
				t.Skip("read-only directory is writable here (running as root?)")
			}
			dir := filepath.Join(ro, sub)
			err := checkDataDir(dir)
			if err == nil {
				t.Fatal("checkDataDir succeeded on a read-only location")
			}
			if want := `--data-dir "` + dir + `": not writable: `; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %q, want prefix %q", err, want)
			}
		})
	}
}

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	cfgReadToken  = "read-token-0123456789"
	cfgWriteToken = "write-token-0123456789"
)

// TestConfigTokenFile: --auth-token-file is read and checked before
// anything starts; a bad file is one line naming the flag and the line,
// never the token.
func TestConfigTokenFile(t *testing.T) {
	good := "# tokens of regd\nread " + cfgReadToken + "\nwrite " + cfgWriteToken + "\n"
	unreadable := writeFile(t, "unreadable", good, 0o000)
	canRead := false
	if f, err := os.Open(unreadable); err == nil {
		f.Close()
		canRead = true // root ignores permission bits
	}
	tests := []struct {
		name    string
		content string // written to a file unless path is set
		path    string
		args    []string
		env     map[string]string
		wantErr string // error prefix after `--auth-token-file "<path>"`; "" means success
		check   func(t *testing.T, c *Config)
	}{
		{name: "good", content: good, check: func(t *testing.T, c *Config) {
			if len(c.Tokens) != 2 || c.Tokens[0].Scope != api.ScopeRead || c.Tokens[1].Scope != api.ScopeWrite || c.TokenReads {
				t.Errorf("Tokens %d, TokenReads %v", len(c.Tokens), c.TokenReads)
			}
		}},
		{name: "reads need tokens", content: good, args: []string{"--auth-reads", "token"}, check: func(t *testing.T, c *Config) {
			if !c.TokenReads {
				t.Error("TokenReads = false")
			}
		}},
		{name: "from env", content: good, env: map[string]string{"REGD_AUTH_READS": "token"}, check: func(t *testing.T, c *Config) {
			if !c.TokenReads || len(c.Tokens) != 2 {
				t.Errorf("TokenReads %v, tokens %d", c.TokenReads, len(c.Tokens))
			}
		}},
		{name: "beyond loopback with tokens", content: good, args: []string{"--http-addr", "0.0.0.0:8080"}, check: func(t *testing.T, c *Config) {
			if c.Insecure || len(c.exposures()) != 0 {
				t.Errorf("Insecure %v, exposures %v", c.Insecure, c.exposures())
			}
		}},
		{name: "short token", content: "write 0123456789\n", wantErr: ": line 1: token is shorter than 16 characters"},
		{name: "bad scope", content: "# x\nadmin " + cfgWriteToken + "\n", wantErr: `: line 2: the scope (first word) must be "read" or "write"`},
		{name: "token first", content: cfgWriteToken + " write\n", wantErr: ": line 1: the scope"},
		{name: "one field", content: "read\n", wantErr: ": line 1: want"},
		{name: "duplicate", content: good + "read " + cfgWriteToken + "\n", wantErr: ": line 4: the same token is already on line 3"},
		{name: "empty", content: "\n# none\n", wantErr: ": no tokens in the file"},
		{name: "missing file", path: filepath.Join(t.TempDir(), "nope"), wantErr: ": cannot read: no such file or directory"},
		{name: "a directory", path: t.TempDir(), wantErr: ": cannot read: is a directory"},
		{name: "unreadable", path: unreadable, wantErr: ": cannot read: permission denied"},
		{name: "bad auth-reads", content: good, args: []string{"--auth-reads", "closed"}, wantErr: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "unreadable" && canRead {
				t.Skip("permission bits are not enforced here (running as root?)")
			}
			path := tt.path
			if path == "" {
				path = writeFile(t, "tokens", tt.content, 0o600)
			}
			args := append([]string{"--auth-token-file", path}, tt.args...)
			c, err := parseConfig(args, mapEnv(tt.env), &bytes.Buffer{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatal("parseConfig succeeded, want an error")
			}
			msg := err.Error()
			if tt.wantErr == "-" {
				if !strings.HasPrefix(msg, `--auth-reads "closed": must be "open" or "token"`) {
					t.Fatalf("error %q", msg)
				}
				return
			}
			if want := fmt.Sprintf("--auth-token-file %q%s", path, tt.wantErr); !strings.HasPrefix(msg, want) {
				t.Errorf("error %q, want prefix %q", msg, want)
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, cfgWriteToken) || strings.Contains(msg, "0123456789") {
				t.Errorf("error %q spans lines or shows a token", msg)
			}
		})
	}

	t.Run("auth-reads token without a file", func(t *testing.T) {
		_, err := parseConfig([]string{"--auth-reads", "token"}, mapEnv(nil), &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), `--auth-reads "token": needs --auth-token-file`) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("world-readable file is an exposure", func(t *testing.T) {
		path := writeFile(t, "tokens", good, 0o644)
		c, err := parseConfig([]string{"--auth-token-file", path}, mapEnv(nil), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if ex := c.exposures(); len(ex) != 1 || ex[0].key != "auth-token-file" {
			t.Fatalf("exposures %+v, want one about the token file", ex)
		}
	})
}

// TestConfigInsecure: a REST listener beyond loopback needs tokens, a
// client CA, or --insecure.
func TestConfigInsecure(t *testing.T) {
	certs := tlstest.New(t)
	const refusal = `: listening beyond loopback without --auth-token-file; add tokens, or --insecure to accept anyone on the network`
	tests := []struct {
		addr string
		args []string
		ok   bool
	}{
		{addr: "127.0.0.1:8080", ok: true},
		{addr: "127.1.2.3:8080", ok: true},
		{addr: "[::1]:8080", ok: true},
		{addr: "localhost:8080", ok: true},
		{addr: "LOCALHOST:8080", ok: true},
		{addr: "0.0.0.0:8080"},
		{addr: ":8080"},
		{addr: "[::]:8080"},
		{addr: "10.0.0.5:8080"},
		{addr: "regd.example:8080"},
		{addr: "0.0.0.0:8080", args: []string{"--insecure"}, ok: true},
		{addr: "0.0.0.0:8080", args: []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey}},
		{addr: "0.0.0.0:8080", args: []string{"--http-cert-file", certs.ServerCert, "--http-key-file", certs.ServerKey, "--http-client-ca-file", certs.CA.CertFile}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.addr+strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := parseConfig(append([]string{"--http-addr", tt.addr}, tt.args...), mapEnv(nil), &bytes.Buffer{})
			if tt.ok {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				insecure := slices.Contains(tt.args, "--insecure")
				if got := len(c.exposures()) == 1; got != insecure {
					t.Errorf("exposures %+v; want one exactly when --insecure is given", c.exposures())
				}
				return
			}
			if want := fmt.Sprintf("--http-addr %q", tt.addr) + refusal; err == nil || err.Error() != want {
				t.Fatalf("err %v, want %q", err, want)
			}
		})
	}
	t.Run("from env", func(t *testing.T) {
		_, err := parseConfig(nil, mapEnv(map[string]string{"REGD_HTTP_ADDR": "0.0.0.0:1"}), &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), `--http-addr "0.0.0.0:1" (from REGD_HTTP_ADDR): listening beyond loopback`) {
			t.Fatalf("err %v", err)
		}
		if _, err := parseConfig(nil, mapEnv(map[string]string{"REGD_HTTP_ADDR": "0.0.0.0:1", "REGD_INSECURE": "true"}), &bytes.Buffer{}); err != nil {
			t.Fatalf("with REGD_INSECURE: %v", err)
		}
	})
}

// TestConfigTLS: the TLS flags of the REST API and of etcd, each error one
// line naming the flag.
func TestConfigTLS(t *testing.T) {
	certs := tlstest.New(t)
	other := tlstest.NewCA(t)
	otherCert, _ := other.Issue(t, "other", true)
	notPEM := writeFile(t, "garbage.pem", "not a certificate\n", 0o600)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	sc, sk, ca := certs.ServerCert, certs.ServerKey, certs.CA.CertFile
	httpsClient := []string{"--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"}
	httpsPeer := []string{"--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"}
	with := func(lists ...[]string) []string { return slices.Concat(lists...) }

	tests := []struct {
		name   string
		args   []string
		prefix string // error prefix; "" means success
		check  func(t *testing.T, c *Config)
	}{
		// REST
		{name: "rest tls", args: []string{"--http-cert-file", sc, "--http-key-file", sk}, check: func(t *testing.T, c *Config) {
			if c.HTTPTLS == nil || c.HTTPTLS.config.MinVersion != tls.VersionTLS12 || c.HTTPTLS.config.ClientAuth != tls.NoClientCert {
				t.Errorf("HTTPTLS %+v", c.HTTPTLS)
			}
		}},
		{name: "rest mtls", args: []string{"--http-cert-file", sc, "--http-key-file", sk, "--http-client-ca-file", ca}, check: func(t *testing.T, c *Config) {
			if c.HTTPTLS == nil || c.HTTPTLS.config.ClientAuth != tls.RequireAndVerifyClientCert || c.HTTPTLS.config.ClientCAs == nil {
				t.Errorf("HTTPTLS %+v", c.HTTPTLS)
			}
		}},
		{name: "rest cert without key", args: []string{"--http-cert-file", sc}, prefix: fmt.Sprintf("--http-cert-file %q: needs --http-key-file too", sc)},
		{name: "rest key without cert", args: []string{"--http-key-file", sk}, prefix: fmt.Sprintf("--http-key-file %q: needs --http-cert-file too", sk)},
		{name: "rest cert missing", args: []string{"--http-cert-file", missing, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: cannot read: no such file", missing)},
		{name: "rest key missing", args: []string{"--http-cert-file", sc, "--http-key-file", missing}, prefix: fmt.Sprintf("--http-key-file %q: cannot read: no such file", missing)},
		{name: "rest cert not PEM", args: []string{"--http-cert-file", notPEM, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: with --http-key-file %q: ", notPEM, sk)},
		{name: "rest key of another cert", args: []string{"--http-cert-file", otherCert, "--http-key-file", sk}, prefix: fmt.Sprintf("--http-cert-file %q: with --http-key-file %q: ", otherCert, sk)},
		{name: "rest client CA without TLS", args: []string{"--http-client-ca-file", ca}, prefix: fmt.Sprintf("--http-client-ca-file %q: needs --http-cert-file", ca)},
		{name: "rest client CA not PEM", args: []string{"--http-cert-file", sc, "--http-key-file", sk, "--http-client-ca-file", notPEM}, prefix: fmt.Sprintf("--http-client-ca-file %q: holds no PEM certificate", notPEM)},

		// etcd client side
		{name: "etcd client tls", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--trusted-ca-file", ca, "--client-cert-auth"}), check: func(t *testing.T, c *Config) {
			if c.ClientTLS.CertFile != sc || c.ClientTLS.KeyFile != sk || c.ClientTLS.TrustedCAFile != ca || !c.ClientTLS.ClientCertAuth || c.ClientAutoTLS {
				t.Errorf("ClientTLS %v auto %v", c.ClientTLS, c.ClientAutoTLS)
			}
			if !c.PeerTLS.Empty() || c.PeerAutoTLS {
				t.Errorf("PeerTLS %v auto %v", c.PeerTLS, c.PeerAutoTLS)
			}
		}},
		{name: "etcd client auto tls", args: with(httpsClient, []string{"--auto-tls"}), check: func(t *testing.T, c *Config) {
			if !c.ClientAutoTLS || !c.ClientTLS.Empty() {
				t.Errorf("ClientTLS %v auto %v", c.ClientTLS, c.ClientAutoTLS)
			}
		}},
		{name: "https client URL without cert", args: httpsClient, prefix: `--listen-client-urls "https://127.0.0.1:2379": an https URL needs --cert-file and --key-file, or --auto-tls`},
		{name: "https advertised client URL without cert", args: []string{"--advertise-client-urls", "https://127.0.0.1:2379"}, prefix: `--advertise-client-urls "https://127.0.0.1:2379": an https URL needs`},
		{name: "client cert without https URL", args: []string{"--cert-file", sc, "--key-file", sk}, prefix: fmt.Sprintf("--cert-file %q: no https URL in --listen-client-urls to use it on", sc)},
		{name: "auto-tls without https URL", args: []string{"--auto-tls"}, prefix: `--auto-tls "true": no https URL in --listen-client-urls`},
		{name: "client key without cert", args: with(httpsClient, []string{"--key-file", sk}), prefix: fmt.Sprintf("--key-file %q: needs --cert-file too", sk)},
		{name: "client cert unreadable", args: with(httpsClient, []string{"--cert-file", missing, "--key-file", sk}), prefix: fmt.Sprintf("--cert-file %q: cannot read", missing)},
		{name: "client-cert-auth without CA", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--client-cert-auth"}), prefix: `--client-cert-auth "true": needs --trusted-ca-file`},
		{name: "client CA not PEM", args: with(httpsClient, []string{"--cert-file", sc, "--key-file", sk, "--trusted-ca-file", notPEM}), prefix: fmt.Sprintf("--trusted-ca-file %q: holds no PEM certificate", notPEM)},
		{name: "auto-tls with cert", args: with(httpsClient, []string{"--auto-tls", "--cert-file", sc, "--key-file", sk}), prefix: `--auto-tls "true": given together with --cert-file`},
		{name: "auto-tls with cert auth", args: with(httpsClient, []string{"--auto-tls", "--client-cert-auth", "--trusted-ca-file", ca}), prefix: `--auto-tls "true": cannot verify client certificates`},
		{name: "client-cert-auth over http", args: []string{"--client-cert-auth", "--trusted-ca-file", ca}, prefix: `--client-cert-auth "true": needs https URLs`},

		// etcd peer side
		{name: "etcd peer tls", args: with(httpsPeer, []string{"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"}), check: func(t *testing.T, c *Config) {
			if c.PeerTLS.CertFile != sc || !c.PeerTLS.ClientCertAuth || c.PeerTLS.TrustedCAFile != ca || !c.ClientTLS.Empty() {
				t.Errorf("PeerTLS %v ClientTLS %v", c.PeerTLS, c.ClientTLS)
			}
			if c.InitialCluster != "default=https://127.0.0.1:2380" {
				t.Errorf("InitialCluster %q", c.InitialCluster)
			}
		}},
		{name: "etcd peer auto tls", args: with(httpsPeer, []string{"--peer-auto-tls"}), check: func(t *testing.T, c *Config) {
			if !c.PeerAutoTLS {
				t.Error("PeerAutoTLS = false")
			}
		}},
		{name: "https peer URL without cert", args: httpsPeer, prefix: `--listen-peer-urls "https://127.0.0.1:2380": an https URL needs --peer-cert-file and --peer-key-file, or --peer-auto-tls`},
		{name: "peer cert without https URL", args: []string{"--peer-cert-file", sc, "--peer-key-file", sk}, prefix: fmt.Sprintf("--peer-cert-file %q: no https URL in --listen-peer-urls", sc)},
		{name: "peer-auto-tls without https URL", args: []string{"--peer-auto-tls"}, prefix: `--peer-auto-tls "true": no https URL in --listen-peer-urls`},
		{name: "peer-client-cert-auth without CA", args: with(httpsPeer, []string{"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-client-cert-auth"}), prefix: `--peer-client-cert-auth "true": needs --peer-trusted-ca-file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, mapEnv(nil), &bytes.Buffer{})
			if tt.prefix == "" {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("parseConfig succeeded, want an error starting %q", tt.prefix)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.prefix) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line starting %q", msg, tt.prefix)
			}
		})
	}

	t.Run("etcd exposures", func(t *testing.T) {
		c, err := parseConfig([]string{
			"--listen-client-urls", "http://0.0.0.0:2379", "--listen-peer-urls", "https://10.0.0.1:2380",
			"--peer-cert-file", sc, "--peer-key-file", sk, "--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
		}, mapEnv(nil), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		ex := c.exposures()
		if len(ex) != 1 || ex[0].key != "listen-client-url" || ex[0].value != "http://0.0.0.0:2379" {
			t.Fatalf("exposures %+v, want the client URL only (the peer URL asks for certificates)", ex)
		}
	})
}

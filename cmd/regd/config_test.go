package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/internal/server"
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

// settled is c without its parsing state, for comparing what it holds.
func settled(c *Config) Config {
	s := *c
	s.flags, s.set, s.fromEnv = nil, nil, nil
	return s
}

func TestConfigDefaults(t *testing.T) {
	var out bytes.Buffer
	c, err := parseConfig(nil, mapEnv(nil), &out)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	want := Config{
		Server: server.Config{
			Node: node.Config{
				Name:                "default",
				DataDir:             "default.regd",
				ListenClientURLs:    mustURLs(t, "http://127.0.0.1:2379"),
				AdvertiseClientURLs: mustURLs(t, "http://127.0.0.1:2379"),
				ListenPeerURLs:      mustURLs(t, "http://127.0.0.1:2380"),
				AdvertisePeerURLs:   mustURLs(t, "http://127.0.0.1:2380"),
				InitialCluster:      "default=http://127.0.0.1:2380",
				ClusterState:        "new",
				ClusterToken:        "regd-cluster",
				MinFreeBytes:        node.DefaultMinFreeBytes,
			},
			Prefix:              "/service/",
			ExpiryRetention:     10000,
			MaxInFlight:         4096,
			MaxConns:            8192,
			MaxWatchesPerClient: 64,
		},
		HTTPAddr:        "127.0.0.1:8080",
		LogLevel:        zapcore.InfoLevel,
		EtcdLogLevel:    zapcore.WarnLevel,
		ShutdownTimeout: 10 * time.Second,
		ShowVersion:     false,
	}
	if got := settled(c); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
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
				if c.Server.Node.DataDir != "n1.regd" {
					t.Errorf("DataDir = %q, want n1.regd", c.Server.Node.DataDir)
				}
				if c.Server.Node.InitialCluster != "n1=http://127.0.0.1:2380" {
					t.Errorf("InitialCluster = %q", c.Server.Node.InitialCluster)
				}
			},
		},
		{
			name: "data-dir follows name from env",
			env:  map[string]string{"REGD_NAME": "e1"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Node.Name != "e1" || c.Server.Node.DataDir != "e1.regd" {
					t.Errorf("Name, DataDir = %q, %q", c.Server.Node.Name, c.Server.Node.DataDir)
				}
			},
		},
		{
			name: "explicit data-dir kept",
			args: []string{"--name=n1", "--data-dir=/var/lib/regd"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Node.DataDir != "/var/lib/regd" {
					t.Errorf("DataDir = %q", c.Server.Node.DataDir)
				}
			},
		},
		{
			name: "initial-cluster from multiple peer urls",
			args: []string{"-name", "n2", "-initial-advertise-peer-urls", "http://10.0.0.2:2380, https://n2.example:2381/",
				"--listen-peer-urls", "http://127.0.0.1:2380,https://127.0.0.1:2381", "--peer-auto-tls"},
			check: func(t *testing.T, c *Config) {
				want := "n2=http://10.0.0.2:2380,n2=https://n2.example:2381/"
				if c.Server.Node.InitialCluster != want {
					t.Errorf("InitialCluster = %q, want %q", c.Server.Node.InitialCluster, want)
				}
				if !reflect.DeepEqual(c.Server.Node.AdvertisePeerURLs, mustURLs(t, "http://10.0.0.2:2380", "https://n2.example:2381/")) {
					t.Errorf("InitialAdvertisePeerURLs = %v", c.Server.Node.AdvertisePeerURLs)
				}
			},
		},
		{
			name: "explicit initial-cluster",
			args: []string{"--name", "b", "--initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380", "--initial-cluster-state", "existing"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Node.InitialCluster != "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380" || c.Server.Node.ClusterState != "existing" {
					t.Errorf("InitialCluster, State = %q, %q", c.Server.Node.InitialCluster, c.Server.Node.ClusterState)
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
				"--min-free-bytes=0", "--quota-backend-bytes=1048576", "--enable-pprof",
				"--cors-allowed-origins", "https://UI.example, http://127.0.0.1:3000",
			},
			check: func(t *testing.T, c *Config) {
				want := Config{
					Server: server.Config{
						Node: node.Config{
							Name:                "x",
							DataDir:             "d",
							ListenClientURLs:    mustURLs(t, "http://0.0.0.0:12379", "https://[::1]:12379"),
							AdvertiseClientURLs: mustURLs(t, "https://x.example:12379"),
							ListenPeerURLs:      mustURLs(t, "http://0.0.0.0:12380"),
							AdvertisePeerURLs:   mustURLs(t, "http://x.example:12380"),
							InitialCluster:      "x=http://x.example:12380",
							ClusterState:        "new",
							ClusterToken:        "tok",
							ClientAutoTLS:       true,
							MinFreeBytes:        -1,
							QuotaBackendBytes:   1 << 20,
						},
						Prefix:              "/svc/a/",
						ExpiryRetention:     1,
						MaxInFlight:         10,
						MaxConns:            20,
						MaxWatchesPerClient: 3,
						EnablePprof:         true,
						CORSAllowedOrigins:  []string{"https://ui.example", "http://127.0.0.1:3000"},
					},
					HTTPAddr:        ":0",
					LogLevel:        zapcore.DebugLevel,
					EtcdLogLevel:    zapcore.ErrorLevel,
					ShutdownTimeout: 1500 * time.Millisecond,
					Insecure:        true,
				}
				if got := settled(c); !reflect.DeepEqual(got, want) {
					t.Errorf("\n got %+v\nwant %+v", got, want)
				}
			},
		},
		{
			name: "flag syntax: one dash, =, bool value, -- ends the flags",
			args: []string{"-name=s", "-http-addr", "localhost:1", "--insecure=false", "-enable-pprof", "--"},
			check: func(t *testing.T, c *Config) {
				if c.Server.Node.Name != "s" || c.HTTPAddr != "localhost:1" || c.Insecure || !c.Server.EnablePprof {
					t.Errorf("got %+v", settled(c))
				}
			},
		},
		{
			name: "a flag given twice keeps the last value",
			args: []string{"--listen-client-urls", "http://127.0.0.1:1", "--listen-client-urls", "http://127.0.0.1:2"},
			check: func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c.Server.Node.ListenClientURLs, mustURLs(t, "http://127.0.0.1:2")) {
					t.Errorf("ListenClientURLs = %v", c.Server.Node.ListenClientURLs)
				}
			},
		},
		{
			name: "numbers in Go's syntax, as the flag package reads them",
			args: []string{"--max-conns=0x10", "--max-inflight=1_000"},
			check: func(t *testing.T, c *Config) {
				if c.Server.MaxConns != 16 || c.Server.MaxInFlight != 1000 {
					t.Errorf("MaxConns %d, MaxInFlight %d", c.Server.MaxConns, c.Server.MaxInFlight)
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
		"REGD_CORS_ALLOWED_ORIGINS":        "*",
	}

	t.Run("env fills unset flags", func(t *testing.T) {
		c, err := parseConfig(nil, mapEnv(env), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		want := Config{
			Server: server.Config{
				Node: node.Config{
					Name:                "envname",
					DataDir:             "/env/data",
					ListenClientURLs:    mustURLs(t, "http://0.0.0.0:3379"),
					AdvertiseClientURLs: mustURLs(t, "http://env.example:3379"),
					ListenPeerURLs:      mustURLs(t, "http://0.0.0.0:3380"),
					AdvertisePeerURLs:   mustURLs(t, "http://env.example:3380"),
					InitialCluster:      "other=http://o.example:3380,envname=http://env.example:3380",
					ClusterState:        "existing",
					ClusterToken:        "envtok",
					MinFreeBytes:        node.DefaultMinFreeBytes,
				},
				Prefix:              "/envsvc/",
				ExpiryRetention:     42,
				MaxInFlight:         100,
				MaxConns:            200,
				MaxWatchesPerClient: 5,
				CORSAllowedOrigins:  []string{"*"},
			},
			HTTPAddr:        "0.0.0.0:9090",
			LogLevel:        zapcore.WarnLevel,
			EtcdLogLevel:    zapcore.DebugLevel,
			ShutdownTimeout: 3 * time.Second,
			Insecure:        true,
		}
		if got := settled(c); !reflect.DeepEqual(got, want) {
			t.Errorf("\n got %+v\nwant %+v", got, want)
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
		if c.Server.Node.Name != "flagname" || c.LogLevel != zapcore.ErrorLevel || c.Server.ExpiryRetention != 7 ||
			c.Server.Prefix != "/flag/" || c.Server.Node.InitialCluster != "flagname=http://f.example:3380" {
			t.Errorf("flags not preferred: %+v", c)
		}
		// Unset flags still come from the environment.
		if c.Server.Node.DataDir != "/env/data" || c.HTTPAddr != "0.0.0.0:9090" || c.Server.Node.ClusterToken != "envtok" {
			t.Errorf("env not applied to unset flags: %+v", c)
		}
	})

	t.Run("empty env is unset", func(t *testing.T) {
		c, err := parseConfig(nil, mapEnv(map[string]string{"REGD_NAME": "", "REGD_PREFIX": ""}), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Server.Node.Name != "default" || c.Server.Prefix != "/service/" {
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
		{name: "bad int flag", args: []string{"--expiry-retention", "x"}, prefix: `--expiry-retention "x": must be a whole number`},
		{name: "int out of range", args: []string{"--max-conns=99999999999999999999"}, prefix: `--max-conns "99999999999999999999": out of range`},
		{name: "bad bool flag", args: []string{"--insecure=maybe"}, prefix: `--insecure "maybe": must be true or false`},
		{name: "bool takes no separate value", args: []string{"--insecure", "false"}, prefix: `unexpected argument "false"`},
		{name: "bad duration", args: []string{"--shutdown-timeout=soon"}, prefix: `--shutdown-timeout "soon": must be a duration`},
		{name: "three dashes", args: []string{"---name=x"}, prefix: `"---name=x": not a flag`},
		{name: "no name", args: []string{"-=x"}, prefix: `"-=x": not a flag`},
		{name: "flag value from env unparsable", env: map[string]string{"REGD_INSECURE": "yes please"}, prefix: `--insecure "yes please" (from REGD_INSECURE): must be true or false`},

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
		{"https://a.example,,https://b.example", "", "empty entry in list"},
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

// TestREADMEFlags keeps the README's flags table true to the code: every
// flag is listed, nothing else is, and a flag listed alone shows its
// default.
func TestREADMEFlags(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| (`--[a-z-]+`(?:, `--[a-z-]+`)*) \\|([^|]*)\\|")
	flagName := regexp.MustCompile("`--([a-z-]+)`")
	listed := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		names := flagName.FindAllStringSubmatch(m[1], -1)
		for _, n := range names {
			listed[n[1]] = true
		}
		if len(names) != 1 {
			continue
		}
		f := newConfig().flags.Lookup(names[0][1])
		if f == nil {
			continue // reported below
		}
		want := f.DefValue
		if d, ok := computedDefaults[f.Name]; ok {
			want = d
		}
		if got := strings.Trim(strings.TrimSpace(m[2]), "`"); got != want {
			t.Errorf("README: --%s default %q, the flag's is %q", f.Name, got, want)
		}
	}
	c := newConfig()
	c.flags.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			t.Errorf("README's flags table lacks --%s", f.Name)
		}
		delete(listed, f.Name)
	})
	delete(listed, "help")
	for name := range listed {
		t.Errorf("README's flags table lists --%s, which regd does not have", name)
	}
}

package main

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/checks"
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
			HistoryRetention:    time.Hour,
			MaxInFlight:         4096,
			MaxConns:            8192,
			MaxWatchesPerClient: 64,
			DNSDomain:           "regd.",
			Checks:              server.ChecksConfig{MaxConcurrent: 256, AllowedCIDRs: checks.DefaultAllowedCIDRs},
		},
		HTTPAddr:        "127.0.0.1:8080",
		DNSAddr:         "127.0.0.1:8600",
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
				"--expiry-retention=1", "--history-retention=90s", "--shutdown-timeout=1500ms",
				"--auto-tls", "--insecure", "--max-inflight=10", "--max-conns=20", "--max-watches-per-client=3",
				"--min-free-bytes=0", "--quota-backend-bytes=1048576", "--enable-pprof",
				"--cors-allowed-origins", "https://UI.example, http://127.0.0.1:3000",
				"--dns-addr=[::1]:53", "--dns-domain=Disco.Example", "--dns-ttl=1m", "--grpc-naming-prefix=/grpc/",
				"--check-max-concurrent=7", "--check-allowed-cidrs=10.0.0.0/8, fd00::/8,192.168.1.1",
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
						HistoryRetention:    90 * time.Second,
						MaxInFlight:         10,
						MaxConns:            20,
						MaxWatchesPerClient: 3,
						EnablePprof:         true,
						CORSAllowedOrigins:  []string{"https://ui.example", "http://127.0.0.1:3000"},
						DNSDomain:           "disco.example.",
						DNSTTL:              time.Minute,
						GRPCNamingPrefix:    "/grpc/",
						Checks: server.ChecksConfig{MaxConcurrent: 7, AllowedCIDRs: []netip.Prefix{
							netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.168.1.1/32"),
						}},
					},
					HTTPAddr:        ":0",
					DNSAddr:         "[::1]:53",
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
		"REGD_HISTORY_RETENTION":           "2h",
		"REGD_SHUTDOWN_TIMEOUT":            "3s",
		"REGD_INSECURE":                    "true",
		"REGD_MAX_INFLIGHT":                "100",
		"REGD_MAX_CONNS":                   "200",
		"REGD_MAX_WATCHES_PER_CLIENT":      "5",
		"REGD_CORS_ALLOWED_ORIGINS":        "*",
		"REGD_DNS_ADDR":                    "127.0.0.1:5353",
		"REGD_DNS_DOMAIN":                  "disco",
		"REGD_DNS_TTL":                     "5s",
		"REGD_GRPC_NAMING_PREFIX":          "/grpc/",
		"REGD_CHECK_MAX_CONCURRENT":        "9",
		"REGD_CHECK_ALLOWED_CIDRS":         "10.1.0.0/16",
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
				HistoryRetention:    2 * time.Hour,
				MaxInFlight:         100,
				MaxConns:            200,
				MaxWatchesPerClient: 5,
				CORSAllowedOrigins:  []string{"*"},
				DNSDomain:           "disco.",
				DNSTTL:              5 * time.Second,
				GRPCNamingPrefix:    "/grpc/",
				Checks:              server.ChecksConfig{MaxConcurrent: 9, AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
			},
			HTTPAddr:        "0.0.0.0:9090",
			DNSAddr:         "127.0.0.1:5353",
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
				"--expiry-retention", "(default 10000)", "--history-retention", "(default 1h)", "--shutdown-timeout", "(default 10s)", "--version",
				"$REGD_LISTEN_CLIENT_URLS",
			} {
				if !strings.Contains(usage, want) {
					t.Errorf("usage lacks %q:\n%s", want, usage)
				}
			}
		})
	}
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

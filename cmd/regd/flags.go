package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/regd/regd/api"
	"github.com/regd/regd/checks"
	"github.com/regd/regd/cluster"
	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// Defaults of the flags that regd's command owns; the contract (and
// etcd, whose flag names regd mirrors) fixes most of them. Knobs owned by
// a package take that package's default.
const (
	defaultName                = "default"
	defaultHTTPAddr            = "127.0.0.1:8080"
	defaultDNSAddr             = "127.0.0.1:8600" // Consul's DNS port
	defaultClientURLs          = "http://127.0.0.1:2379"
	defaultPeerURLs            = "http://127.0.0.1:2380"
	defaultInitialClusterState = "new"
	defaultInitialClusterToken = "regd-cluster"
	defaultPrefix              = "/service/"
	defaultLogLevel            = "info"
	defaultEtcdLogLevel        = "warn" // etcd is chatty at info
)

// envPrefix is prepended to the upper-cased flag name to form its
// environment variable.
const envPrefix = "REGD_"

// computedDefaults documents defaults that depend on other flags; the flag
// itself is registered with an empty default so that "not given" is
// detectable, and Validate fills it in.
var computedDefaults = map[string]string{
	"data-dir":        "<name>.regd",
	"initial-cluster": "<name>=<initial-advertise-peer-urls>",
}

// AddFlags binds every flag of regd to its field in c and sets the field
// to the flag's default. Each flag is bound here once; the field is where
// the value is used (most are in c.Server and c.Server.Node, which go to
// server.Start as they are). A value that does not parse is refused by the
// flag's Value with regd's own wording (values.go).
func (c *Config) AddFlags(fs *flag.FlagSet) {
	n := &c.Server.Node
	fs.StringVar(&n.Name, "name", defaultName, "human-readable `name` of this member; must be unique in the cluster")
	fs.StringVar(&n.DataDir, "data-dir", "", "`directory` for the embedded etcd member's data")
	fs.StringVar(&c.HTTPAddr, "http-addr", defaultHTTPAddr, "`host:port` the REST API listens on (port 0 picks a free port)")
	fs.Var(newURLs(&n.ListenClientURLs, defaultClientURLs), "listen-client-urls", "comma-separated `urls` to listen on for etcd client traffic")
	fs.Var(newURLs(&n.AdvertiseClientURLs, defaultClientURLs), "advertise-client-urls", "comma-separated etcd client `urls` advertised to the cluster")
	fs.Var(newURLs(&n.ListenPeerURLs, defaultPeerURLs), "listen-peer-urls", "comma-separated `urls` to listen on for etcd peer traffic")
	fs.Var(newURLs(&n.AdvertisePeerURLs, defaultPeerURLs), "initial-advertise-peer-urls", "comma-separated etcd peer `urls` advertised to the cluster")
	fs.StringVar(&n.InitialCluster, "initial-cluster", "", "initial cluster configuration for bootstrapping, as comma-separated `name=url` entries")
	fs.Var(newChoice(&n.ClusterState, defaultInitialClusterState, "new", "existing"), "initial-cluster-state", "initial cluster `state`: new or existing")
	fs.StringVar(&n.ClusterToken, "initial-cluster-token", defaultInitialClusterToken, "initial cluster `token`, unique per cluster")
	fs.StringVar(&c.Server.Prefix, "prefix", defaultPrefix, "etcd key `prefix` under which services are registered")
	fs.Var(newLevel(&c.LogLevel, defaultLogLevel), "log-level", "regd's log `level`: debug, info, warn or error")
	fs.Var(newLevel(&c.EtcdLogLevel, defaultEtcdLogLevel), "etcd-log-level", "embedded etcd's log `level`: debug, info, warn or error")
	fs.Var(newInt(&c.Server.ExpiryRetention, registry.DefaultExpiryRetention), "expiry-retention", "maximum `number` of expiry ledger entries kept")
	fs.Var(newDuration(&c.Server.HistoryRetention, cluster.DefaultHistoryRetention), "history-retention", "how long etcd's history is kept, as a `duration`: how far back a watch client can resume with Last-Event-ID; history is compacted sooner when the backend's data reaches half of --quota-backend-bytes")
	fs.Var(newDuration(&c.ShutdownTimeout, server.DefaultShutdownTimeout), "shutdown-timeout", "how long graceful shutdown may take, as a `duration` such as 10s")

	fs.StringVar(&c.AuthTokenFile, "auth-token-file", "", "`file` of REST API access tokens, one \"<scope> <token>\" per line (scope read, write or admin); writes then need a write token, membership and snapshots an admin token")
	fs.Var(&tokenReadsValue{&c.TokenReads}, "auth-reads", "`mode` of reads with --auth-token-file: open (no token needed) or token (a read or write token needed)")
	fs.Var(newBool(&c.Insecure), "insecure", "allow --http-addr beyond loopback without --auth-token-file or --http-client-ca-file: anyone on the network may read and write")
	fs.StringVar(&c.HTTPCertFile, "http-cert-file", "", "serve the REST API over TLS with this PEM certificate `file` (needs --http-key-file)")
	fs.StringVar(&c.HTTPKeyFile, "http-key-file", "", "PEM private key `file` of --http-cert-file")
	fs.StringVar(&c.HTTPClientCAFile, "http-client-ca-file", "", "require REST clients to present a certificate signed by a CA in this PEM `file`")
	fs.Var(newOrigins(&c.Server.CORSAllowedOrigins), "cors-allowed-origins", "comma-separated `origins` (scheme://host[:port]) whose browser pages may call the REST API, preflight included, or * for any; empty: no CORS")
	fs.StringVar(&n.ClientTLSInfo.CertFile, "cert-file", "", "etcd: TLS certificate `file` for https client URLs")
	fs.StringVar(&n.ClientTLSInfo.KeyFile, "key-file", "", "etcd: TLS key `file` for https client URLs")
	fs.StringVar(&n.ClientTLSInfo.TrustedCAFile, "trusted-ca-file", "", "etcd: CA `file` that client certificates are verified against")
	fs.Var(newBool(&n.ClientTLSInfo.ClientCertAuth), "client-cert-auth", "etcd: require client certificates on the client URLs (needs --trusted-ca-file)")
	fs.Var(newBool(&n.ClientAutoTLS), "auto-tls", "etcd: https client URLs with a generated self-signed certificate")
	fs.StringVar(&n.PeerTLSInfo.CertFile, "peer-cert-file", "", "etcd: TLS certificate `file` for https peer URLs, also presented to other members")
	fs.StringVar(&n.PeerTLSInfo.KeyFile, "peer-key-file", "", "etcd: TLS key `file` for https peer URLs")
	fs.StringVar(&n.PeerTLSInfo.TrustedCAFile, "peer-trusted-ca-file", "", "etcd: CA `file` that other members' certificates are verified against")
	fs.Var(newBool(&n.PeerTLSInfo.ClientCertAuth), "peer-client-cert-auth", "etcd: require member certificates on the peer URLs (needs --peer-trusted-ca-file)")
	fs.Var(newBool(&n.PeerAutoTLS), "peer-auto-tls", "etcd: https peer URLs with a generated self-signed certificate (encrypts, does not authenticate)")
	fs.Var(newInt(&c.Server.MaxInFlight, api.DefaultMaxInFlight), "max-inflight", "maximum `number` of REST requests handled at once; beyond it 503 overloaded (watches and blocking queries not counted)")
	fs.Var(newInt(&c.Server.MaxConns, api.DefaultMaxConns), "max-conns", "maximum `number` of open REST connections; beyond it new ones wait in the kernel's backlog")
	fs.Var(newBool(&c.Server.EnablePprof), "enable-pprof", "serve Go's profiler under /debug/pprof/ on the REST listener (reads rule applies), as etcd's flag of the same name")
	fs.Var(newInt(&c.Server.MaxWatchesPerClient, api.DefaultMaxWatchesPerClient), "max-watches-per-client", "maximum `number` of watch streams and blocking queries one client IP may hold open; beyond it 429")
	fs.Var(newFreeBytes(&n.MinFreeBytes, node.DefaultMinFreeBytes), "min-free-bytes", "free `bytes` kept in the data dir's file system: below them writes are refused (503 storage_full) and etcd's NOSPACE alarm is raised until space is freed; 0 turns the guard off")
	fs.Var(newInt(&n.QuotaBackendBytes, 0), "quota-backend-bytes", "etcd: raise the NOSPACE alarm when the backend database exceeds this many `bytes` (0: etcd's default, 2 GiB)")
	fs.StringVar(&c.DNSAddr, "dns-addr", defaultDNSAddr, "`host:port` DNS listens on, UDP and TCP (port 0 picks a free port); empty turns DNS off")
	fs.StringVar(&c.Server.DNSDomain, "dns-domain", dns.DefaultDomain, "`domain` DNS answers for: <service>.service.<domain>, _<service>._tcp.service.<domain>, <id>.<service>.instance.<domain>")
	fs.Var(newDuration(&c.Server.DNSTTL, 0), "dns-ttl", "TTL of DNS records and of negative answers, as a `duration` of whole seconds, 0s-24h; 0s: clients ask again each time")
	fs.StringVar(&c.Server.GRPCNamingPrefix, "grpc-naming-prefix", "", "write each up instance also as an etcd gRPC naming endpoint under this key `prefix` (<prefix><service>/<id>), for etcd's gRPC resolver (etcd:///<prefix><service>); empty: off")
	fs.Var(newInt(&c.Server.Checks.MaxConcurrent, cluster.DefaultCheckMaxConcurrent), "check-max-concurrent", "maximum `number` of health-check probes in flight on the leader, which runs every check")
	fs.Var(newCIDRs(&c.Server.Checks.AllowedCIDRs, checks.DefaultAllowedCIDRs), "check-allowed-cidrs", "comma-separated `networks` (CIDR) that health checks may connect to, every address a target resolves to checked at each connection; 0.0.0.0/0,::/0 allows any")
	fs.Var(newBool(&c.ShowVersion), "version", "print the version and exit")
}

// parseArgs sets the flags in args, in the flag package's syntax (-flag or
// --flag; -flag=value, or -flag value unless it is a bool flag; "--" or the
// first argument that is not a flag ends the flags), and returns the
// arguments after them. regd reads its command line itself, rather than
// with FlagSet.Parse, so that every mistake is one line in its own words
// naming the flag. -h, -help and --help return errHelp.
func (c *Config) parseArgs(args []string) ([]string, error) {
	for len(args) > 0 {
		arg := args[0]
		if len(arg) < 2 || arg[0] != '-' {
			return args, nil
		}
		args = args[1:]
		if arg == "--" {
			return args, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if name == "" || name[0] == '-' {
			return nil, fmt.Errorf("%q: not a flag; flags are --name or --name=value (regd --help lists them)", arg)
		}
		f := c.flags.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				return nil, errHelp
			}
			return nil, fmt.Errorf("--%s: unknown flag (regd --help lists them)", name)
		}
		switch {
		case hasValue:
		case isBool(f):
			value = "true"
		case len(args) == 0:
			return nil, fmt.Errorf("--%s: needs a value", name)
		default:
			value, args = args[0], args[1:]
		}
		if err := c.flags.Set(name, value); err != nil {
			return nil, c.valueError(name, value, err)
		}
	}
	return nil, nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// applyEnv sets every flag that the command line left unset from its
// REGD_<FLAG> variable, when that is not empty. A flag given on the command
// line wins even when it equals the default; the variables are read after
// the command line for that reason.
func (c *Config) applyEnv(getenv func(string) string) error {
	var err error
	c.flags.VisitAll(func(f *flag.Flag) {
		if err != nil || c.set[f.Name] {
			return
		}
		env := envName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		c.fromEnv[f.Name] = env
		if e := c.flags.Set(f.Name, v); e != nil {
			err = c.valueError(f.Name, v, e)
		}
	})
	return err
}

// envName returns the environment variable that backs flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// printUsage writes the help text. It is hand-rolled rather than
// fs.PrintDefaults so that flags print with "--", computed defaults are
// shown, and each flag's environment variable is listed.
func printUsage(fs *flag.FlagSet, out io.Writer) {
	var b strings.Builder
	b.WriteString("Usage: regd [flags]\n\n")
	fmt.Fprintf(&b, "Every flag can also be set with the environment variable %s<FLAG> (upper case, '-' -> '_');\na flag given on the command line wins over the environment.\n\nFlags:\n", envPrefix)
	fs.VisitAll(func(f *flag.Flag) {
		valueName, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if valueName != "" {
			fmt.Fprintf(&b, " %s", valueName)
		}
		fmt.Fprintf(&b, "\n    \t%s", usage)
		if d, ok := computedDefaults[f.Name]; ok {
			fmt.Fprintf(&b, " (default %q)", d)
		} else if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case string:
				if f.DefValue != "" {
					fmt.Fprintf(&b, " (default %q)", f.DefValue)
				}
			case bool:
			default:
				fmt.Fprintf(&b, " (default %s)", f.DefValue)
			}
		}
		fmt.Fprintf(&b, " [$%s]\n", envName(f.Name))
	})
	io.WriteString(out, b.String())
}

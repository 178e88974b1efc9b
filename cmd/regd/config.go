package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/api"
	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// internalPrefix is where regd keeps its own bookkeeping in etcd. The registry
// prefix must not overlap it, or service keys and bookkeeping keys would be
// indistinguishable to watchers and listings.
const internalPrefix = registry.InternalPrefix

// envPrefix is prepended to the upper-cased flag name to form its environment
// variable.
const envPrefix = "REGD_"

// errHelp is returned by parseConfig when -h/--help was given. It wraps
// flag.ErrHelp so that callers may test for either.
var errHelp = fmt.Errorf("help requested: %w", flag.ErrHelp)

// Config is regd's whole configuration after parsing and validation.
//
// When ShowVersion is true, parseConfig stops before validation and the other
// fields are left zero: the caller is expected to print the version and exit,
// and a half-configured environment should not prevent that.
type Config struct {
	Name                     string
	DataDir                  string
	HTTPAddr                 string
	ListenClientURLs         []url.URL
	AdvertiseClientURLs      []url.URL
	ListenPeerURLs           []url.URL
	InitialAdvertisePeerURLs []url.URL
	InitialCluster           string // validated "name=url,name=url"
	InitialClusterState      string // "new" or "existing"
	InitialClusterToken      string
	Prefix                   string
	LogLevel                 zapcore.Level // regd's own log level
	EtcdLogLevel             zapcore.Level // embedded etcd's log level
	ExpiryRetention          int           // max expiry ledger entries kept
	ShutdownTimeout          time.Duration
	ShowVersion              bool

	// Access tokens of the REST API (nil: no authentication).
	AuthTokenFile string
	Tokens        []api.Token
	TokenReads    bool // --auth-reads token: reads need a token too
	Insecure      bool // --insecure: serve beyond loopback without authentication

	// TLS of the REST API; HTTPTLS is nil for plain HTTP.
	HTTPCertFile     string
	HTTPKeyFile      string
	HTTPClientCAFile string
	HTTPTLS          *restTLS

	// TLS of the embedded etcd's own listeners, etcd's flags passed through.
	ClientTLS     transport.TLSInfo
	PeerTLS       transport.TLSInfo
	ClientAutoTLS bool
	PeerAutoTLS   bool

	// Limits of the REST API.
	MaxInFlight         int
	MaxConns            int
	MaxWatchesPerClient int

	EnablePprof bool // --enable-pprof: Go's profiler under /debug/pprof/

	// Storage: the disk guard's minimum (-1: off) and etcd's backend quota
	// (0: etcd's default).
	MinFreeBytes      int64
	QuotaBackendBytes int64
}

// rawFlags holds the flag destinations before validation turns them into a
// Config.
type rawFlags struct {
	name                     string
	dataDir                  string
	httpAddr                 string
	listenClientURLs         string
	advertiseClientURLs      string
	listenPeerURLs           string
	initialAdvertisePeerURLs string
	initialCluster           string
	initialClusterState      string
	initialClusterToken      string
	prefix                   string
	logLevel                 string
	etcdLogLevel             string
	expiryRetention          int
	shutdownTimeout          time.Duration
	version                  bool

	authTokenFile       string
	authReads           string
	insecure            bool
	httpCertFile        string
	httpKeyFile         string
	httpClientCAFile    string
	certFile            string
	keyFile             string
	trustedCAFile       string
	clientCertAuth      bool
	autoTLS             bool
	peerCertFile        string
	peerKeyFile         string
	peerTrustedCAFile   string
	peerClientCertAuth  bool
	peerAutoTLS         bool
	maxInFlight         int
	maxConns            int
	maxWatchesPerClient int
	enablePprof         bool
	minFreeBytes        int64
	quotaBackendBytes   int64
}

// computedDefaults documents defaults that depend on other flags; the flag
// itself is registered with an empty default so that "not given" is detectable.
var computedDefaults = map[string]string{
	"data-dir":        "<name>.regd",
	"initial-cluster": "<name>=<initial-advertise-peer-urls>",
}

func newFlagSet(r *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("regd", flag.ContinueOnError)
	fs.StringVar(&r.name, "name", "default", "human-readable `name` of this member; must be unique in the cluster")
	fs.StringVar(&r.dataDir, "data-dir", "", "`directory` for the embedded etcd member's data")
	fs.StringVar(&r.httpAddr, "http-addr", "127.0.0.1:8080", "`host:port` the REST API listens on (port 0 picks a free port)")
	fs.StringVar(&r.listenClientURLs, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated `urls` to listen on for etcd client traffic")
	fs.StringVar(&r.advertiseClientURLs, "advertise-client-urls", "http://127.0.0.1:2379", "comma-separated etcd client `urls` advertised to the cluster")
	fs.StringVar(&r.listenPeerURLs, "listen-peer-urls", "http://127.0.0.1:2380", "comma-separated `urls` to listen on for etcd peer traffic")
	fs.StringVar(&r.initialAdvertisePeerURLs, "initial-advertise-peer-urls", "http://127.0.0.1:2380", "comma-separated etcd peer `urls` advertised to the cluster")
	fs.StringVar(&r.initialCluster, "initial-cluster", "", "initial cluster configuration for bootstrapping, as comma-separated `name=url` entries")
	fs.StringVar(&r.initialClusterState, "initial-cluster-state", "new", "initial cluster `state`: new or existing")
	fs.StringVar(&r.initialClusterToken, "initial-cluster-token", "regd-cluster", "initial cluster `token`, unique per cluster")
	fs.StringVar(&r.prefix, "prefix", "/service/", "etcd key `prefix` under which services are registered")
	fs.StringVar(&r.logLevel, "log-level", "info", "regd's log `level`: debug, info, warn or error")
	fs.StringVar(&r.etcdLogLevel, "etcd-log-level", "warn", "embedded etcd's log `level`: debug, info, warn or error")
	fs.IntVar(&r.expiryRetention, "expiry-retention", 10000, "maximum `number` of expiry ledger entries kept")
	fs.DurationVar(&r.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long graceful shutdown may take")

	fs.StringVar(&r.authTokenFile, "auth-token-file", "", "`file` of REST API access tokens, one \"<scope> <token>\" per line (scope read or write); writes then need a write token")
	fs.StringVar(&r.authReads, "auth-reads", "open", "`mode` of reads with --auth-token-file: open (no token needed) or token (a read or write token needed)")
	fs.BoolVar(&r.insecure, "insecure", false, "allow --http-addr beyond loopback without --auth-token-file or --http-client-ca-file: anyone on the network may read and write")
	fs.StringVar(&r.httpCertFile, "http-cert-file", "", "serve the REST API over TLS with this PEM certificate `file` (needs --http-key-file)")
	fs.StringVar(&r.httpKeyFile, "http-key-file", "", "PEM private key `file` of --http-cert-file")
	fs.StringVar(&r.httpClientCAFile, "http-client-ca-file", "", "require REST clients to present a certificate signed by a CA in this PEM `file`")
	fs.StringVar(&r.certFile, "cert-file", "", "etcd: TLS certificate `file` for https client URLs")
	fs.StringVar(&r.keyFile, "key-file", "", "etcd: TLS key `file` for https client URLs")
	fs.StringVar(&r.trustedCAFile, "trusted-ca-file", "", "etcd: CA `file` that client certificates are verified against")
	fs.BoolVar(&r.clientCertAuth, "client-cert-auth", false, "etcd: require client certificates on the client URLs (needs --trusted-ca-file)")
	fs.BoolVar(&r.autoTLS, "auto-tls", false, "etcd: https client URLs with a generated self-signed certificate")
	fs.StringVar(&r.peerCertFile, "peer-cert-file", "", "etcd: TLS certificate `file` for https peer URLs, also presented to other members")
	fs.StringVar(&r.peerKeyFile, "peer-key-file", "", "etcd: TLS key `file` for https peer URLs")
	fs.StringVar(&r.peerTrustedCAFile, "peer-trusted-ca-file", "", "etcd: CA `file` that other members' certificates are verified against")
	fs.BoolVar(&r.peerClientCertAuth, "peer-client-cert-auth", false, "etcd: require member certificates on the peer URLs (needs --peer-trusted-ca-file)")
	fs.BoolVar(&r.peerAutoTLS, "peer-auto-tls", false, "etcd: https peer URLs with a generated self-signed certificate (encrypts, does not authenticate)")
	fs.IntVar(&r.maxInFlight, "max-inflight", api.DefaultMaxInFlight, "maximum `number` of REST requests handled at once; beyond it 503 overloaded (watches and blocking queries not counted)")
	fs.IntVar(&r.maxConns, "max-conns", api.DefaultMaxConns, "maximum `number` of open REST connections; beyond it new ones wait in the kernel's backlog")
	fs.BoolVar(&r.enablePprof, "enable-pprof", false, "serve Go's profiler under /debug/pprof/ on the REST listener (reads rule applies), as etcd's flag of the same name")
	fs.IntVar(&r.maxWatchesPerClient, "max-watches-per-client", api.DefaultStreamsPerClient, "maximum `number` of watch streams and blocking queries one client IP may hold open; beyond it 429")
	fs.Int64Var(&r.minFreeBytes, "min-free-bytes", node.DefaultMinFreeBytes, "free `bytes` kept in the data dir's file system: below them writes are refused (503 storage_full) and etcd's NOSPACE alarm is raised until space is freed; 0 turns the guard off")
	fs.Int64Var(&r.quotaBackendBytes, "quota-backend-bytes", 0, "etcd: raise the NOSPACE alarm when the backend database exceeds this many `bytes` (0: etcd's default, 2 GiB)")
	fs.BoolVar(&r.version, "version", false, "print the version and exit")
	return fs
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

// parseConfig parses args (without the program name). getenv is os.Getenv in
// production. It returns errHelp when -h/--help was asked; the usage text is
// then already written to out. Any other error is a single line meant to be
// printed as "regd: <err>".
func parseConfig(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	var r rawFlags
	fs := newFlagSet(&r)
	// The flag package would print the error and the full usage on every
	// mistake; the caller prints the error itself, and usage only on request.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, out)
			return nil, errHelp
		}
		return nil, flagSyntaxError(err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// fromEnv maps a flag name to the variable that supplied its value, so that
	// validation errors can point at the environment rather than leave the user
	// searching the command line.
	fromEnv := map[string]string{}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || set[f.Name] {
			return
		}
		env := envName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("invalid value %q for --%s (from %s): %w", v, f.Name, env, err)
			return
		}
		set[f.Name] = true
		fromEnv[f.Name] = env
	})
	if envErr != nil {
		return nil, envErr
	}

	if r.version {
		return &Config{ShowVersion: true}, nil
	}

	v := validator{fs: fs, fromEnv: fromEnv}
	c := &Config{}

	c.Name = r.name
	if err := v.name(c.Name); err != nil {
		return nil, err
	}

	c.DataDir = r.dataDir
	if !set["data-dir"] {
		c.DataDir = c.Name + ".regd"
	}
	if c.DataDir == "" {
		return nil, v.fail("data-dir", "must not be empty")
	}

	c.HTTPAddr = r.httpAddr
	if err := v.httpAddr(c.HTTPAddr); err != nil {
		return nil, err
	}

	var err error
	if c.ListenClientURLs, err = v.urlList("listen-client-urls", r.listenClientURLs); err != nil {
		return nil, err
	}
	if c.AdvertiseClientURLs, err = v.urlList("advertise-client-urls", r.advertiseClientURLs); err != nil {
		return nil, err
	}
	if c.ListenPeerURLs, err = v.urlList("listen-peer-urls", r.listenPeerURLs); err != nil {
		return nil, err
	}
	if c.InitialAdvertisePeerURLs, err = v.urlList("initial-advertise-peer-urls", r.initialAdvertisePeerURLs); err != nil {
		return nil, err
	}

	c.InitialCluster = r.initialCluster
	if !set["initial-cluster"] {
		// Same as etcd: a single-member cluster made of this member's peer URLs.
		entries := make([]string, len(c.InitialAdvertisePeerURLs))
		for i, u := range c.InitialAdvertisePeerURLs {
			entries[i] = c.Name + "=" + u.String()
		}
		c.InitialCluster = strings.Join(entries, ",")
	}
	if err := v.initialCluster(c.InitialCluster, c.Name); err != nil {
		return nil, err
	}

	c.InitialClusterState = r.initialClusterState
	if c.InitialClusterState != "new" && c.InitialClusterState != "existing" {
		return nil, v.fail("initial-cluster-state", `must be "new" or "existing"`)
	}

	c.InitialClusterToken = r.initialClusterToken
	if c.InitialClusterToken == "" {
		return nil, v.fail("initial-cluster-token", "must not be empty")
	}

	c.Prefix = r.prefix
	if err := v.prefix(c.Prefix); err != nil {
		return nil, err
	}

	if c.LogLevel, err = v.level("log-level", r.logLevel); err != nil {
		return nil, err
	}
	if c.EtcdLogLevel, err = v.level("etcd-log-level", r.etcdLogLevel); err != nil {
		return nil, err
	}

	c.ExpiryRetention = r.expiryRetention
	if c.ExpiryRetention < 1 {
		return nil, v.fail("expiry-retention", "must be at least 1")
	}

	c.ShutdownTimeout = r.shutdownTimeout
	if c.ShutdownTimeout <= 0 {
		return nil, v.fail("shutdown-timeout", "must be greater than 0")
	}

	for _, f := range []struct {
		name string
		val  int
		dst  *int
	}{
		{"max-inflight", r.maxInFlight, &c.MaxInFlight},
		{"max-conns", r.maxConns, &c.MaxConns},
		{"max-watches-per-client", r.maxWatchesPerClient, &c.MaxWatchesPerClient},
	} {
		if f.val < 1 {
			return nil, v.fail(f.name, "must be at least 1")
		}
		*f.dst = f.val
	}

	switch {
	case r.minFreeBytes < 0:
		return nil, v.fail("min-free-bytes", "must not be negative (0 turns the guard off)")
	case r.minFreeBytes == 0:
		c.MinFreeBytes = -1
	default:
		c.MinFreeBytes = r.minFreeBytes
	}
	if r.quotaBackendBytes < 0 {
		return nil, v.fail("quota-backend-bytes", "must not be negative")
	}
	c.QuotaBackendBytes = r.quotaBackendBytes

	if err := v.security(c, &r); err != nil {
		return nil, err
	}
	return c, nil
}

// validator formats validation errors uniformly as
// `--flag "value"[ (from REGD_FLAG)]: reason`.
type validator struct {
	fs      *flag.FlagSet
	fromEnv map[string]string
}

// failValue reports a problem with value, which may be one element of the
// flag's full value (e.g. one URL of a list) so the user sees what to fix.
func (v validator) failValue(name, value, format string, args ...any) error {
	src := ""
	if env, ok := v.fromEnv[name]; ok {
		src = " (from " + env + ")"
	}
	return fmt.Errorf("--%s %q%s: %s", name, value, src, fmt.Sprintf(format, args...))
}

// fail reports a problem with the flag's whole current value.
func (v validator) fail(name, format string, args ...any) error {
	return v.failValue(name, v.fs.Lookup(name).Value.String(), format, args...)
}

func (v validator) name(name string) error {
	if name == "" {
		return v.fail("name", "must not be empty")
	}
	// "=" and "," are the separators of --initial-cluster.
	if strings.ContainsAny(name, "=,") {
		return v.fail("name", `must not contain "=" or ","`)
	}
	return nil
}

func (v validator) httpAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return v.fail("http-addr", "must be host:port: %s", splitHostPortReason(err))
	}
	if _, err := parsePort(port, 0); err != nil {
		return v.fail("http-addr", "%s", err)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return v.fail("http-addr", "invalid host %q", host)
	}
	return nil
}

// splitHostPortReason strips the address that net.AddrError repeats, since
// the caller already quotes it.
func splitHostPortReason(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// parsePort accepts a decimal port in [min, 65535]. strconv.Atoi alone would
// also accept signs, hence the digit check.
func parsePort(port string, min int) (int, error) {
	if port == "" {
		return 0, errors.New("missing port")
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("port %q is not numeric", port)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < min || n > 65535 {
		return 0, fmt.Errorf("port %q out of range %d-65535", port, min)
	}
	return n, nil
}

// validHostname is deliberately loose (RFC 1123 characters and lengths) –
// resolution is left to net.Listen.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkURL validates one etcd member URL. etcd itself accepts more (e.g. unix
// sockets), but regd only supports plain TCP endpoints and an early, precise
// error beats a late one from inside the embedded server.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, fmt.Errorf("invalid URL: %v", ue.Err)
		}
		return nil, fmt.Errorf("invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, errors.New("missing host")
	}
	if u.User != nil {
		return nil, errors.New("must not contain user information")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, errors.New("must not contain a path")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, errors.New("must not contain a query")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, errors.New("must not contain a fragment")
	}
	if u.Hostname() == "" {
		return nil, errors.New("missing host")
	}
	if _, err := parsePort(u.Port(), 1); err != nil {
		return nil, err
	}
	return u, nil
}

// urlKey identifies a URL for duplicate detection, ignoring a trailing "/"
// and host case.
func urlKey(u *url.URL) string {
	return u.Scheme + "://" + strings.ToLower(u.Host)
}

func (v validator) urlList(name, list string) ([]url.URL, error) {
	if strings.TrimSpace(list) == "" {
		return nil, v.failValue(name, list, "must not be empty")
	}
	var urls []url.URL
	seen := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, v.failValue(name, list, "empty entry in list")
		}
		u, err := checkURL(s)
		if err != nil {
			return nil, v.failValue(name, s, "%s", err)
		}
		// Listing a URL twice is always a mistake: a second listener on the
		// same address fails to bind, and duplicate advertised URLs confuse
		// etcd's member matching.
		if seen[urlKey(u)] {
			return nil, v.failValue(name, s, "duplicate URL")
		}
		seen[urlKey(u)] = true
		urls = append(urls, *u)
	}
	return urls, nil
}

func (v validator) initialCluster(cluster, member string) error {
	const name = "initial-cluster"
	if strings.TrimSpace(cluster) == "" {
		return v.failValue(name, cluster, "must not be empty")
	}
	seen := map[string]bool{}
	found := false
	for _, entry := range strings.Split(cluster, ",") {
		entry = strings.TrimSpace(entry)
		n, s, ok := strings.Cut(entry, "=")
		if !ok || n == "" {
			return v.failValue(name, entry, "entry must be name=url")
		}
		s = strings.TrimSpace(s)
		u, err := checkURL(s)
		if err != nil {
			return v.failValue(name, entry, "%s", err)
		}
		if seen[urlKey(u)] {
			return v.failValue(name, cluster, "duplicate URL %q", s)
		}
		seen[urlKey(u)] = true
		if n == member {
			found = true
		}
	}
	if !found {
		return v.failValue(name, cluster, "no entry for member %q (--name)", member)
	}
	return nil
}

func (v validator) prefix(p string) error {
	const name = "prefix"
	for _, r := range p {
		// Keys are printed in logs and URLs; spaces and control or non-ASCII
		// characters there cause more trouble than they are worth.
		if r < 0x21 || r > 0x7e {
			return v.failValue(name, p, "must contain only printable ASCII characters without spaces")
		}
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
		return v.failValue(name, p, `must start and end with "/"`)
	}
	if strings.HasPrefix(p, internalPrefix) || strings.HasPrefix(internalPrefix, p) {
		return v.failValue(name, p, "overlaps regd's internal keyspace %q", internalPrefix)
	}
	if len(p) < 2 {
		return v.failValue(name, p, "must be at least 2 characters long")
	}
	return nil
}

// level accepts only the levels regd actually logs at; zap's panic/fatal
// levels would silently hide errors, and zap maps "" to info.
func (v validator) level(name, s string) (zapcore.Level, error) {
	l, err := zapcore.ParseLevel(s)
	if s == "" || err != nil || l < zapcore.DebugLevel || l > zapcore.ErrorLevel {
		return 0, v.failValue(name, s, "must be one of debug, info, warn, error")
	}
	return l, nil
}

// checkDataDir creates dir if needed and proves it is writable, so a bad
// --data-dir fails at startup with a clear message instead of deep inside
// etcd's bootstrap.
func checkDataDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("--data-dir %q: must not be empty", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %q: not writable: %w", dir, err)
	}
	err := node.ProbeDataDir(dir)
	if errors.Is(err, syscall.ENOSPC) && node.ReleaseReserve(dir) {
		// A disk filled to the last byte under a running member; the
		// reserve is there to give it room to start again.
		err = node.ProbeDataDir(dir)
	}
	if err != nil {
		return fmt.Errorf("--data-dir %q: not writable: %w", dir, err)
	}
	return nil
}

// flagSyntaxError rewrites the flag package's wording ("flag provided but
// not defined: -nope") into regd's one-line form that names the flag.
func flagSyntaxError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Errorf("--%s: unknown flag (regd --help lists them)", strings.TrimLeft(name, "-"))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return fmt.Errorf("--%s: needs a value", strings.TrimLeft(name, "-"))
	}
	// invalid value "x" for flag -expiry-retention: parse error
	var value, name, reason string
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			value, _ = strconv.Unquote(q)
			if after, ok := strings.CutPrefix(rest[len(q):], " for flag -"); ok {
				name, reason, _ = strings.Cut(after, ": ")
				return fmt.Errorf("--%s %q: %s", name, value, reason)
			}
		}
	}
	return err
}

// ---- security: tokens, TLS, exposure ----

// security validates and loads the access tokens and the TLS material, and
// refuses a REST listener beyond loopback that nothing protects. Every file
// is read here, before anything starts, so that a bad one is one line naming
// its flag; nothing read from a token file is ever part of an error.
func (v validator) security(c *Config, r *rawFlags) error {
	c.AuthTokenFile = r.authTokenFile
	switch r.authReads {
	case "open":
	case "token":
		c.TokenReads = true
		if c.AuthTokenFile == "" {
			return v.fail("auth-reads", "needs --auth-token-file (the tokens to ask for)")
		}
	default:
		return v.fail("auth-reads", `must be "open" or "token"`)
	}
	if c.AuthTokenFile != "" {
		tokens, err := loadTokens(c.AuthTokenFile)
		if err != nil {
			return v.fail("auth-token-file", "%s", err)
		}
		c.Tokens = tokens
	}
	c.Insecure = r.insecure
	c.EnablePprof = r.enablePprof

	c.HTTPCertFile, c.HTTPKeyFile, c.HTTPClientCAFile = r.httpCertFile, r.httpKeyFile, r.httpClientCAFile
	if err := v.keyPair("http-cert-file", c.HTTPCertFile, "http-key-file", c.HTTPKeyFile); err != nil {
		return err
	}
	if c.HTTPClientCAFile != "" {
		if c.HTTPCertFile == "" {
			return v.fail("http-client-ca-file", "needs --http-cert-file and --http-key-file: client certificates are asked for over TLS only")
		}
		if err := v.caFile("http-client-ca-file", c.HTTPClientCAFile); err != nil {
			return err
		}
	}
	if c.HTTPCertFile != "" {
		t, err := newRestTLS(c.HTTPCertFile, c.HTTPKeyFile, c.HTTPClientCAFile)
		if err != nil { // validated above; the files changed in between
			return v.fail("http-cert-file", "%s", err)
		}
		c.HTTPTLS = t
	}

	var err error
	if c.ClientTLS, c.ClientAutoTLS, err = v.etcdTLS(etcdTLSFlags{
		cert: "cert-file", key: "key-file", ca: "trusted-ca-file", certAuth: "client-cert-auth", auto: "auto-tls",
		listen: "listen-client-urls", advertise: "advertise-client-urls",
	}, r.certFile, r.keyFile, r.trustedCAFile, r.clientCertAuth, r.autoTLS, c.ListenClientURLs, c.AdvertiseClientURLs); err != nil {
		return err
	}
	if c.PeerTLS, c.PeerAutoTLS, err = v.etcdTLS(etcdTLSFlags{
		cert: "peer-cert-file", key: "peer-key-file", ca: "peer-trusted-ca-file", certAuth: "peer-client-cert-auth", auto: "peer-auto-tls",
		listen: "listen-peer-urls", advertise: "initial-advertise-peer-urls",
	}, r.peerCertFile, r.peerKeyFile, r.peerTrustedCAFile, r.peerClientCertAuth, r.peerAutoTLS, c.ListenPeerURLs, c.InitialAdvertisePeerURLs); err != nil {
		return err
	}

	// A REST listener others can reach must ask who is calling: by token,
	// or by client certificate. --insecure is the explicit way to say that
	// the network itself is trusted.
	host, _, _ := net.SplitHostPort(c.HTTPAddr)
	if !isLoopback(host) && c.Tokens == nil && c.HTTPClientCAFile == "" && !c.Insecure {
		return v.fail("http-addr", "listening beyond loopback without --auth-token-file; add tokens, or --insecure to accept anyone on the network")
	}
	return nil
}

// isLoopback reports whether host (of a listen address) can only be reached
// from this machine. An empty host, 0.0.0.0 and :: listen everywhere; a
// name other than localhost may resolve to anything.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loadTokens reads and parses a token file. Its errors name a line, never
// a token.
func loadTokens(path string) ([]api.Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", pathReason(err))
	}
	defer f.Close()
	return api.ParseTokens(f)
}

// pathReason strips the path that *fs.PathError repeats, since the caller
// already quotes it.
func pathReason(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", pathReason(err))
	}
	return b, nil
}

// keyPair checks a certificate and key given by two flags: both or neither,
// both readable, matching, and the certificate not expired.
func (v validator) keyPair(certFlag, cert, keyFlag, key string) error {
	switch {
	case cert == "" && key == "":
		return nil
	case key == "":
		return v.fail(certFlag, "needs --%s too", keyFlag)
	case cert == "":
		return v.fail(keyFlag, "needs --%s too", certFlag)
	}
	certPEM, err := readPEM(cert)
	if err != nil {
		return v.fail(certFlag, "%s", err)
	}
	keyPEM, err := readPEM(key)
	if err != nil {
		return v.fail(keyFlag, "%s", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names what is wrong (no PEM data, a key that does not
		// match) without quoting either file.
		return v.fail(certFlag, "with --%s %q: %v", keyFlag, key, err)
	}
	if pair.Leaf != nil && time.Now().After(pair.Leaf.NotAfter) {
		return v.fail(certFlag, "the certificate expired on %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// caFile checks that a CA bundle is readable and holds certificates.
func (v validator) caFile(flag, path string) error {
	b, err := readPEM(path)
	if err != nil {
		return v.fail(flag, "%s", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return v.fail(flag, "holds no PEM certificate")
	}
	return nil
}

// etcdTLSFlags names one side's (client or peer) TLS flags, as etcd does.
type etcdTLSFlags struct {
	cert, key, ca, certAuth, auto string
	listen, advertise             string
}

// etcdTLS validates one side's TLS flags against its URLs. An https URL
// needs a certificate (or auto-tls) and TLS material needs an https URL to
// serve: etcd itself would fail late on the first and silently ignore the
// second, leaving an operator who asked for TLS without it.
func (v validator) etcdTLS(f etcdTLSFlags, cert, key, ca string, certAuth, auto bool, listen, advertise []url.URL) (transport.TLSInfo, bool, error) {
	var none transport.TLSInfo
	if err := v.keyPair(f.cert, cert, f.key, key); err != nil {
		return none, false, err
	}
	if ca != "" {
		if err := v.caFile(f.ca, ca); err != nil {
			return none, false, err
		}
	}
	if auto && cert != "" {
		return none, false, v.fail(f.auto, "given together with --%s; use one or the other", f.cert)
	}
	if auto && (certAuth || ca != "") {
		// etcd replaces the whole TLS setup with the generated one, which
		// has no CA to verify anyone against.
		return none, false, v.fail(f.auto, "cannot verify client certificates (--%s, --%s); use --%s and --%s instead", f.certAuth, f.ca, f.cert, f.key)
	}
	if certAuth && ca == "" {
		return none, false, v.fail(f.certAuth, "needs --%s to verify the certificates against", f.ca)
	}
	haveTLS := cert != "" || auto
	for _, l := range []struct {
		flag string
		urls []url.URL
	}{{f.listen, listen}, {f.advertise, advertise}} {
		for _, u := range l.urls {
			if u.Scheme == "https" && !haveTLS {
				return none, false, v.failValue(l.flag, u.String(), "an https URL needs --%s and --%s, or --%s", f.cert, f.key, f.auto)
			}
		}
	}
	if haveTLS && !slices.ContainsFunc(listen, func(u url.URL) bool { return u.Scheme == "https" }) {
		name := f.cert
		if auto {
			name = f.auto
		}
		return none, false, v.fail(name, "no https URL in --%s to use it on", f.listen)
	}
	if certAuth && !haveTLS {
		return none, false, v.fail(f.certAuth, "needs https URLs in --%s and --%s with --%s", f.listen, f.cert, f.key)
	}
	return transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: ca, ClientCertAuth: certAuth}, auto, nil
}

// exposure is one way this configuration lets someone past the REST API's
// checks: a warning run logs at start, with the flag and value concerned.
type exposure struct {
	msg, key, value string
}

// exposures are warnings, not errors: clusters on private networks
// legitimately listen beyond loopback.
func (c *Config) exposures() []exposure {
	var out []exposure
	if host, _, _ := net.SplitHostPort(c.HTTPAddr); !isLoopback(host) && c.Tokens == nil && c.HTTPClientCAFile == "" {
		out = append(out, exposure{"--insecure: the REST API lets anyone who reaches it read and write", "http-addr", c.HTTPAddr})
	}
	if u, ok := beyondLoopback(c.ListenClientURLs); ok && !c.ClientTLS.ClientCertAuth {
		out = append(out, exposure{"etcd client URL reachable beyond loopback without --client-cert-auth: whoever reaches it reads and writes every key, bypassing the REST API's tokens", "listen-client-url", u})
	}
	if u, ok := beyondLoopback(c.ListenPeerURLs); ok && !c.PeerTLS.ClientCertAuth {
		out = append(out, exposure{"etcd peer URL reachable beyond loopback without --peer-client-cert-auth: whoever reaches it can pose as a cluster member", "listen-peer-url", u})
	}
	if c.AuthTokenFile != "" {
		if fi, err := os.Stat(c.AuthTokenFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
			out = append(out, exposure{"token file is readable by every user of this machine; chmod o-r it", "auth-token-file", c.AuthTokenFile})
		}
	}
	return out
}

func beyondLoopback(urls []url.URL) (string, bool) {
	for _, u := range urls {
		if !isLoopback(u.Hostname()) {
			return u.String(), true
		}
	}
	return "", false
}

// restTLS is the REST API's TLS configuration. The certificate is held
// behind a pointer so that SIGHUP can swap in a renewed one without a
// restart; connections already open keep theirs.
type restTLS struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
	config            *tls.Config
}

// newRestTLS loads the key pair (and the client CA, when given) and
// builds the server's TLS configuration: TLS 1.2 or later, HTTP/2 offered,
// and client certificates required and verified when caFile is set.
func newRestTLS(certFile, keyFile, caFile string) (*restTLS, error) {
	t := &restTLS{certFile: certFile, keyFile: keyFile}
	if err := t.reload(); err != nil {
		return nil, err
	}
	t.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
		t.config.ClientCAs = pool
		t.config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return t, nil
}

// reload reads the key pair again; on error the current one stays.
func (t *restTLS) reload() error {
	pair, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return err
	}
	t.cert.Store(&pair)
	return nil
}

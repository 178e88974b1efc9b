package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

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
	f, err := os.CreateTemp(dir, ".regd-probe-*")
	if err != nil {
		return fmt.Errorf("--data-dir %q: not writable: %w", dir, err)
	}
	name := f.Name()
	err = f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
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

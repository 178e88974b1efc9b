package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/server"
)

// errHelp is returned by parseConfig when -h/--help was given. It wraps
// flag.ErrHelp so that callers may test for either.
var errHelp = fmt.Errorf("help requested: %w", flag.ErrHelp)

// Config is regd's whole configuration, in the shape of etcd's embed.Config:
// AddFlags (flags.go) binds every flag once, straight into the field that
// uses it, and Validate (validate.go) checks the whole, fills the defaults
// that depend on other flags and loads the files the flags name. Most
// fields are in Server, the node's own configuration, which run hands to
// server.Start as it is; the fields below are what only the command uses.
//
// When ShowVersion is true, parseConfig returns before Validate: the caller
// prints the version and exits, and a half-configured environment should
// not prevent that. Values that do not even parse are refused either way.
type Config struct {
	// Server is the node: its Node (the etcd member), the registry prefix,
	// the REST API's limits, tokens (Auth) and TLS. run fills in the
	// listener and the loggers.
	Server server.Config

	HTTPAddr        string        // --http-addr; run binds Server.Listener there
	DNSAddr         string        // --dns-addr; run binds Server.DNSPacketConn and DNSListener there ("": off)
	LogLevel        zapcore.Level // regd's own log level
	EtcdLogLevel    zapcore.Level // the embedded etcd's log level
	ShutdownTimeout time.Duration
	ShowVersion     bool

	// Access tokens of the REST API: Validate reads AuthTokenFile into
	// Tokens and builds Server.Auth from them and TokenReads.
	AuthTokenFile string
	Tokens        []api.Token
	TokenReads    bool // --auth-reads token: reads need a token too
	Insecure      bool // --insecure: serve beyond loopback without authentication

	// TLS of the REST API: Validate loads the files into HTTPTLS, whose
	// Config is Server.TLS; nil for plain HTTP.
	HTTPCertFile     string
	HTTPKeyFile      string
	HTTPClientCAFile string
	HTTPTLS          *server.ReloadableTLS

	flags   *flag.FlagSet
	set     map[string]bool   // flags given, on the command line or in the environment
	fromEnv map[string]string // flag -> the environment variable that gave its value
}

// newConfig returns a Config holding every flag's default, with its flags
// bound.
func newConfig() *Config {
	c := &Config{
		flags:   flag.NewFlagSet("regd", flag.ContinueOnError),
		set:     map[string]bool{},
		fromEnv: map[string]string{},
	}
	c.AddFlags(c.flags)
	return c
}

// parseConfig parses args (without the program name) and the REGD_*
// variables (getenv is os.Getenv in production), then validates. It
// returns errHelp when -h/--help was asked; the usage text is then already
// written to out. Any other error is a single line meant to be printed as
// "regd: <err>".
func parseConfig(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := newConfig()
	rest, err := c.parseArgs(args)
	if errors.Is(err, errHelp) {
		printUsage(c.flags, out)
		return nil, errHelp
	}
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("unexpected argument %q", rest[0])
	}
	c.flags.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if err := c.applyEnv(getenv); err != nil {
		return nil, err
	}
	c.flags.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	if c.ShowVersion {
		return c, nil
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Flag errors are one line, `--flag "value"[ (from REGD_FLAG)]: reason`,
// so that the user sees what to fix and where it was set.

// valueError reports a value the flag's Value refused; err may name the
// element of a list at fault (elementError).
func (c *Config) valueError(name, value string, err error) error {
	var ee *elementError
	if errors.As(err, &ee) {
		value = ee.elem
	}
	return c.failValue(name, value, "%s", err)
}

// failValue reports a problem with value, which may be one element of the
// flag's full value (e.g. one URL of a list).
func (c *Config) failValue(name, value, format string, args ...any) error {
	src := ""
	if env, ok := c.fromEnv[name]; ok {
		src = " (from " + env + ")"
	}
	return fmt.Errorf("--%s %q%s: %s", name, value, src, fmt.Sprintf(format, args...))
}

// fail reports a problem with the flag's whole current value.
func (c *Config) fail(name, format string, args ...any) error {
	return c.failValue(name, c.flags.Lookup(name).Value.String(), format, args...)
}

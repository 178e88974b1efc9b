// Package cli is regd's command line client: `regd <command> ...`. The
// regd binary is both the server and the client; cmd/regd hands a first
// argument that names a command (IsCommand) to Main, and everything else
// to the server, whose flags and REGD_* variables stay as they are.
//
// Every command talks to regd's REST API through the Go client kit
// (package client), so failover across --endpoints exists once, there:
// `regd run` keeps its instance alive with a client.Registrar, `regd
// watch` follows the service with a client.Discovery, one-shot requests go
// through a client.Client (with FailFast: when no endpoint can be
// connected to the command fails at once; other failures are retried,
// on the next endpoint first, until --command-timeout). Commands live in
// one file each (ls.go, register.go, deregister.go, drain.go,
// expirations.go, watch.go, run.go, members.go, snapshot.go, export.go)
// and register themselves in the table below; output goes through one
// printer (-w table|json, printers.go) so that a command only builds its
// value and its table.
//
// The approach: the standard library's flag package, one FlagSet per
// command, with the global client flags added to each, and a small parser
// that lets flags and arguments mix (`regd members add m4 URL --learner`).
// A CLI library (spf13/cobra, urfave/cli) was considered: the command set
// is small and flat, the server side already reads its flags with the
// standard library (etcd-style single and double dashes, which cobra's
// pflag would change), and exit codes and per-command help are a few
// lines here; a library would add dependencies without removing code
// that matters.
//
// Exit codes, which scripts can rely on: 0 success; 1 a request failed
// (regd's error message on stderr); 2 bad usage (one line naming the flag
// or argument, then the command's usage, on stderr). --help prints the
// usage on stdout and exits 0. `regd run` exits with its command's code.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/regd/regd/client"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Env is the process the command runs in; tests run commands in-process.
type Env struct {
	// Stdin is what `regd run` passes on to its command; nil: nothing
	// (the null device).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Restore makes a data dir from a snapshot (node.Restore, which
	// brings etcd's server code along: cmd/regd passes it in so that this
	// package stays a pure REST client).
	Restore func(RestoreConfig) error
}

// command is one entry of the command table.
type command struct {
	name    string
	summary string // one line, for `regd help`
	usage   string // the synopsis and what it does, for `regd help <command>`
	// run parses nothing itself: flags are bound on fs by setup, and run
	// gets the positional arguments.
	setup func(fs *flag.FlagSet, c *call)
	run   func(ctx context.Context, c *call, args []string) error
	// commandLine: the first argument starts a command line of its own
	// (`regd run ... -- CMD ARGS`): flags end there, `--` or not.
	commandLine bool
}

var commands = map[string]*command{}

func register(cmd *command) { commands[cmd.name] = cmd }

// IsCommand reports whether arg names a command of the client (or help).
func IsCommand(arg string) bool {
	_, ok := commands[arg]
	return ok || arg == "help"
}

// call is one run of a command: its global flags, output and client.
type call struct {
	env       Env
	endpoints string
	token     string
	cacert    string
	output    string        // table or json
	timeout   time.Duration // --command-timeout
	extra     any           // the command's own flags, set by its setup
}

// DefaultCommandTimeout is --command-timeout's default (etcdctl's too).
const DefaultCommandTimeout = 5 * time.Second

// usageError is bad usage: exit 2 with the command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitCode ends a command with a code of its own and nothing more on
// stderr: `regd run` passes its command's code on, `--strict` says that a
// drain handshake ended short (what happened is already on stderr).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// Main runs `regd <args...>` as a client command and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) == 0 || args[0] == "help" {
		if len(args) > 1 {
			if cmd, ok := commands[args[1]]; ok {
				printUsage(env.Stdout, cmd, newFlagSet(cmd, &call{env: env}))
				return ExitOK
			}
			fmt.Fprintf(env.Stderr, "regd help: unknown command %q\n", args[1])
			printCommands(env.Stderr)
			return ExitUsage
		}
		printCommands(env.Stdout)
		return ExitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "regd: unknown command %q\n", args[0])
		printCommands(env.Stderr)
		return ExitUsage
	}
	c := &call{env: env}
	fs := newFlagSet(cmd, c)
	rest, err := parse(fs, args[1:], cmd.commandLine)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(env.Stdout, cmd, fs)
		return ExitOK
	}
	if err == nil {
		err = c.validate()
	}
	if err == nil {
		err = cmd.run(ctx, c, rest)
	}
	var (
		ue   *usageError
		code exitCode
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "regd %s: %s\n\n", cmd.name, ue.msg)
		printUsage(env.Stderr, cmd, fs)
		return ExitUsage
	default:
		fmt.Fprintf(env.Stderr, "regd %s: %s\n", cmd.name, message(err))
		return ExitFailed
	}
}

// message is what a failed request says on stderr: regd's own message
// when regd answered with an error, else the error.
func message(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		if ae.Code != "" {
			return fmt.Sprintf("%s (HTTP %d %s)", ae.Message, ae.StatusCode, ae.Code)
		}
		return fmt.Sprintf("%s (HTTP %d)", ae.Message, ae.StatusCode)
	}
	return err.Error()
}

func newFlagSet(cmd *command, c *call) *flag.FlagSet {
	fs := flag.NewFlagSet("regd "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.endpoints, "endpoints", "", "comma-separated REST `urls` of regd nodes, tried in order (default http://127.0.0.1:8080) [$REGD_ENDPOINTS]")
	fs.StringVar(&c.token, "token", "", "bearer `token` (--auth-token-file on the server) [$REGD_TOKEN]")
	fs.StringVar(&c.cacert, "cacert", "", "PEM `file` of the CA that signed the REST API's certificate (https endpoints)")
	fs.StringVar(&c.output, "w", "table", "output `format`: table or json (default table)")
	fs.StringVar(&c.output, "write-out", "table", "same as -w `format`")
	fs.DurationVar(&c.timeout, "command-timeout", DefaultCommandTimeout, "how long a request may take, retries on other endpoints included (plus --wait where there is one); watch and run: their first request")
	if cmd.setup != nil {
		cmd.setup(fs, c)
	}
	return fs
}

// parse sets the flags in args, which may come before, between and after
// the arguments (`--` ends the flags), and returns the arguments. With
// commandLine the first argument ends the flags too.
func parse(fs *flag.FlagSet, args []string, commandLine bool) ([]string, error) {
	var rest []string
	for len(args) > 0 {
		arg := args[0]
		args = args[1:]
		if arg == "--" {
			return append(rest, args...), nil
		}
		if len(arg) < 2 || arg[0] != '-' {
			if commandLine {
				return append([]string{arg}, args...), nil
			}
			rest = append(rest, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		if name == "h" || name == "help" {
			return nil, flag.ErrHelp
		}
		f := fs.Lookup(name)
		if f == nil {
			return nil, usagef("unknown flag %s", arg)
		}
		if !hasValue {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				value = "true"
			} else if len(args) == 0 {
				return nil, usagef("flag --%s needs a value", name)
			} else {
				value, args = args[0], args[1:]
			}
		}
		if err := fs.Set(name, value); err != nil {
			return nil, usagef("--%s %q: %v", name, value, err)
		}
	}
	return rest, nil
}

// validate fills the global flags from the environment and checks them.
func (c *call) validate() error {
	if c.endpoints == "" {
		c.endpoints = c.env.Getenv("REGD_ENDPOINTS")
	}
	if c.token == "" {
		c.token = c.env.Getenv("REGD_TOKEN")
	}
	if c.output != "table" && c.output != "json" {
		return usagef("-w %q: want table or json", c.output)
	}
	if c.timeout <= 0 {
		return usagef("--command-timeout %s: must be more than 0", c.timeout)
	}
	for _, e := range c.endpointList() {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return usagef("--endpoints: %q is not an http:// or https:// URL", e)
		}
	}
	return nil
}

func (c *call) endpointList() []string {
	var out []string
	for _, e := range strings.Split(c.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		out = []string{"http://" + client.DefaultAddr}
	}
	return out
}

// config is the client kit's configuration from the global flags.
func (c *call) config() (client.Config, error) {
	cfg := client.Config{Addrs: c.endpointList(), Token: c.token, HTTPClient: &http.Client{}}
	if c.cacert != "" {
		pem, err := os.ReadFile(c.cacert)
		if err != nil {
			return cfg, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("--cacert %s: no PEM certificate in it", c.cacert)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		cfg.HTTPClient.Transport = tr
	}
	return cfg, nil
}

func (c *call) admin() (*client.Admin, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return client.NewAdmin(cfg), nil
}

// client is a client.Client for one-shot requests: failover across
// --endpoints, and a failure at once when none of them can be connected
// to (FailFast).
func (c *call) client() (*client.Client, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return client.NewWithOptions(cfg, client.ClientOptions{FailFast: true}), nil
}

// logger writes what the client kit does on its own (failovers, retries,
// re-registrations) to stderr, from level up: for the long-running
// commands, watch and run.
func (c *call) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(c.env.Stderr, &slog.HandlerOptions{Level: level}))
}

// oneShot is what a command that makes requests and ends needs: the
// client, and ctx bounded by --command-timeout plus wait (the time regd
// may hold the answer on purpose). Call cancel even after an error.
func (c *call) oneShot(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc, *client.Client, error) {
	cl, err := c.client()
	if err != nil {
		return ctx, func() {}, nil, err
	}
	ctx, cancel := c.withTimeout(ctx, wait)
	return ctx, cancel, cl, nil
}

// withTimeout bounds a command's requests: --command-timeout plus the
// time regd may hold the answer on purpose (a drain handshake's wait).
func (c *call) withTimeout(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout+extra)
}

// print writes v as JSON with -w json, else calls table.
func (c *call) print(v any, table func(w io.Writer)) error {
	if c.output == "json" {
		enc := json.NewEncoder(c.env.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	table(c.env.Stdout)
	return nil
}

func printCommands(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("Usage: regd <command> [arguments] [flags]   (regd alone, or with flags, is the server: regd --help)\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-12s %s\n", n, commands[n].summary)
	}
	b.WriteString("\n`regd help <command>` or `regd <command> --help` shows a command's usage and flags.\n")
	b.WriteString("Exit codes: 0 success, 1 a request failed (the message on stderr), 2 bad usage.\n")
	io.WriteString(w, b.String())
}

func printUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(cmd.usage))
	b.WriteString("\n\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		fmt.Fprintf(&b, "  %s%s", dash, f.Name)
		if name != "" {
			fmt.Fprintf(&b, " %s", name)
		}
		fmt.Fprintf(&b, "\n    \t%s\n", usage)
	})
	io.WriteString(w, b.String())
}

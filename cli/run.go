package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/regd/regd/client"
)

type runFlags struct {
	service, id, address string
	ttl                  int
	weight               intFlag
	meta                 metaFlag
	drainOnTerm          time.Duration
	check                checkFlags
}

// forwardedSignals are the signals regd run passes on to its command.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

// Exit codes of regd run when its command cannot be started, as shells
// have them.
const (
	exitCannotExecute = 126 // found, but could not be started
	exitNotFound      = 127
)

func init() {
	register(&command{
		name:        "run",
		commandLine: true,
		summary:     "register an instance, run a command, keep the instance alive while it runs",
		usage: `Usage:
  regd run --service S --address A [--id I] [--ttl N] [--weight N] [--meta key=value]...
           [--check-http URL | --check-tcp HOST:PORT | --check-grpc HOST:PORT[/SVC]]
           [--check-interval D] [--check-timeout D] [--check-failures N]
           [--drain-on-term D] [--] CMD [ARGS...]

Registers instance I of service S at address A, starts CMD, and keeps the
instance alive while CMD runs: heartbeats every third of the TTL, on the
next endpoint when one fails, and registers it again if regd lost it (404).
With a --check-* flag regd also probes CMD's endpoint: after --check-failures
failed probes in a row it removes the instance (expiry cause check_failed)
even though regd run heartbeats, and regd run registers it again at its next
heartbeat, to be checked afresh.
When CMD exits, regd run deregisters the instance (never an expiry) and
exits with CMD's code: 128+N when CMD died of signal N, as shells report it.
The first argument that is not a flag starts CMD ('--' may mark it).

Signals: SIGTERM, SIGINT and SIGHUP are passed on to CMD (to its process
group: CMD runs in one of its own, so that each signal reaches it once; it
should not read from a terminal). With --drain-on-term D, a SIGTERM first
drains the instance and waits up to D (at most 60s) until every watcher has
been sent the drain (the handshake), then passes SIGTERM on; a second
SIGTERM passes on at once. If regd run itself is killed (SIGKILL), nothing
deregisters the instance: it expires once, after its TTL, and on Linux CMD
gets SIGTERM.

--id defaults to <hostname>-<pid of regd run>, with characters a name may
not hold replaced by '-'. Exit codes of regd run itself: 1 when the instance
could not be registered within --command-timeout (CMD is not started), 2 bad
usage, 126 when CMD cannot be started, 127 when it is not found; the instance
is deregistered in every case.`,
		setup: func(fs *flag.FlagSet, c *call) {
			f := &runFlags{meta: metaFlag{}}
			fs.StringVar(&f.service, "service", "", "the `service` to register (required)")
			fs.StringVar(&f.address, "address", "", "the instance's `host:port` (required)")
			fs.StringVar(&f.id, "id", "", "the instance `id` (default <hostname>-<pid>)")
			fs.IntVar(&f.ttl, "ttl", client.DefaultTTL, "the lease's TTL in whole `seconds`, 2–3600: how long the instance outlives regd run if it is killed")
			fs.Var(&f.weight, "weight", "relative share of traffic, `0-10000` (default regd's, 100)")
			fs.Var(f.meta, "meta", "metadata `key=value` (repeatable)")
			f.check.add(fs)
			fs.DurationVar(&f.drainOnTerm, "drain-on-term", 0, "on SIGTERM, drain first and wait up to this `duration` (at most 60s) until every watcher has seen it, then pass SIGTERM on; 0: pass it on at once")
			c.extra = f
		},
		run: runRun,
	})
}

func runRun(ctx context.Context, c *call, args []string) error {
	f := c.extra.(*runFlags)
	switch {
	case f.service == "":
		return usagef("--service is required")
	case f.address == "":
		return usagef("--address is required")
	case len(args) == 0:
		return usagef("no command to run: regd run --service S --address A -- CMD [ARGS...]")
	case f.drainOnTerm < 0:
		return usagef("--drain-on-term %s: must not be negative", f.drainOnTerm)
	}
	check, err := f.check.check()
	if err != nil {
		return err
	}
	id := f.id
	if id == "" {
		id = defaultInstanceID()
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	log := c.logger(slog.LevelInfo)
	cfg.Logger = log
	name := f.service + "/" + id

	// From here on the signals are regd run's: passed on once CMD runs;
	// before that, one ends regd run without starting it.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	reg := client.NewRegistrar(cfg, f.service, id, f.address, client.RegistrarOptions{TTL: f.ttl, Metadata: f.meta, Weight: f.weight.ptr(), Check: check})
	// Close deregisters; regd run's context may have ended (a signal), the
	// deregistration must happen all the same.
	deregister := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		if err := reg.Close(cctx); err != nil {
			fmt.Fprintf(c.env.Stderr, "regd run: could not deregister %s (it expires after its TTL): %s\n", name, message(err))
		}
	}
	sctx, cancel := c.withTimeout(ctx, 0)
	err = reg.Start(sctx)
	cancel()
	if err != nil {
		deregister()
		return fmt.Errorf("could not register %s, so %s was not started: %s", name, args[0], message(err))
	}
	select {
	case s := <-sigs:
		deregister()
		fmt.Fprintf(c.env.Stderr, "regd run: %s before %s started; deregistered %s\n", s, args[0], name)
		return exitCode(128 + signalNumber(s))
	default:
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.env.Stdin, c.env.Stdout, c.env.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		deregister()
		fmt.Fprintf(c.env.Stderr, "regd run: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitCode(exitNotFound)
		}
		return exitCode(exitCannotExecute)
	}
	log.Info("regd run: started", "pid", cmd.Process.Pid, "command", args[0], "service", f.service, "id", id)
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the outcome is read from ProcessState
		close(exited)
	}()

	// The drain outlives regd run's context (which a SIGTERM ends) but
	// not CMD: once CMD has exited it is no longer needed.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer dcancel()
	var (
		drainStarted bool
		drainDone    chan struct{} // closed when the drain ended; nil when not waiting for one
		drainExited  = make(chan struct{})
	)
wait:
	for {
		select {
		case <-exited:
			break wait
		case s := <-sigs:
			if s == syscall.SIGTERM && f.drainOnTerm > 0 && !drainStarted {
				drainStarted = true
				drainDone = drainExited
				go func() {
					defer close(drainExited)
					drainThenReport(dctx, c, reg, name, f.drainOnTerm)
				}()
				continue
			}
			if s == syscall.SIGTERM {
				drainDone = nil // a second SIGTERM: no more waiting
			}
			log.Info("regd run: passing the signal on", "signal", s.String(), "pid", cmd.Process.Pid)
			signalChild(cmd, s)
		case <-drainDone:
			drainDone = nil
			log.Info("regd run: passing the signal on", "signal", syscall.SIGTERM.String(), "pid", cmd.Process.Pid)
			signalChild(cmd, syscall.SIGTERM)
		}
	}
	dcancel()
	if drainStarted {
		<-drainExited
	}
	code := exitStatus(cmd.ProcessState)
	log.Info("regd run: exited", "command", args[0], "code", code)
	deregister()
	if code == 0 {
		return nil
	}
	return exitCode(code)
}

// drainThenReport drains the instance with the handshake, waiting up to
// wait, and says on stderr how far it got; nothing when ctx was cancelled
// because CMD exited meanwhile.
func drainThenReport(ctx context.Context, c *call, reg *client.Registrar, name string, wait time.Duration) {
	ctx, cancel := c.withTimeout(ctx, wait)
	defer cancel()
	obs, err := reg.Drain(ctx, wait)
	switch {
	case errors.Is(err, context.Canceled):
		// CMD exited during the drain: there is nothing left to pass on.
	case err != nil:
		fmt.Fprintf(c.env.Stderr, "regd run: SIGTERM: could not drain %s (%s); passing SIGTERM on\n", name, message(err))
	case !obs.Complete():
		fmt.Fprintf(c.env.Stderr, "regd run: SIGTERM: drained %s, but the wait ended before every watcher had it (%s); passing SIGTERM on\n", name, obs)
	default:
		fmt.Fprintf(c.env.Stderr, "regd run: SIGTERM: drained %s: %s had it; passing SIGTERM on\n", name, obs)
	}
}

// defaultInstanceID is <hostname>-<pid>, made a valid instance id:
// [A-Za-z0-9._-], at most 128 characters.
func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "regd-run"
	}
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, host)
	suffix := "-" + strconv.Itoa(os.Getpid())
	if len(host)+len(suffix) > 128 {
		host = host[:128-len(suffix)]
	}
	return host + suffix
}

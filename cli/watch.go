package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/regd/regd/client"
)

type watchFlags struct {
	exec string
}

func init() {
	register(&command{
		name:    "watch",
		summary: "follow a service's instances: print each change, or run a command with the list",
		usage: `Usage:
  regd watch SERVICE [-w json]
  regd watch SERVICE --exec CMD

Follows the service's up instances (what discovery shows) until interrupted
(SIGINT or SIGTERM; then exit 0), across reconnects and leader changes: when
a stream ends the next endpoint resumes it after the last event's id, so no
change is missed and none is seen twice; when the history to resume from is
gone regd sends the full list (a reset).

Without --exec each change is printed as it comes: first the current list
('list'), then one line per event (register, update, deregister, expire,
reset) with its id. -w json prints one JSON object per line:
{"event":"register","id":"42","data":{...the instance...}}, where the data of
'list' and 'reset' is the whole list ({"service","instances","revision"}).

With --exec, CMD runs through 'sh -c' (as Consul's watch handlers do) with
the service's list as JSON on stdin, the shape of GET
/v1/services/SERVICE/instances: once at the start, then once per change.
Runs never overlap: changes that arrive while CMD runs are coalesced into
one more run with the latest list. A reset runs it once with the full list.
CMD's output goes to regd watch's stdout and stderr; a CMD that fails is
reported on stderr and run again at the next change. On SIGINT or SIGTERM a
running CMD is waited for.`,
		setup: func(fs *flag.FlagSet, c *call) {
			f := &watchFlags{}
			fs.StringVar(&f.exec, "exec", "", "run `CMD` (with sh -c) on every change, the instance list as JSON on stdin")
			c.extra = f
		},
		run: runWatch,
	})
}

func runWatch(ctx context.Context, c *call, args []string) error {
	f := c.extra.(*watchFlags)
	if len(args) != 1 {
		return usagef("watch needs one SERVICE")
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	cfg.Logger = c.logger(slog.LevelWarn)
	d := client.NewDiscovery(cfg, args[0])
	var runner *execRunner
	if f.exec != "" {
		runner = newExecRunner(f.exec, c.env, d.List)
		d.OnEvent(func(ev client.Event) {
			switch ev.Type {
			case client.EventReset:
				var l client.InstanceList
				_ = json.Unmarshal(ev.Data, &l)
				fmt.Fprintf(c.env.Stderr, "regd watch: the stream could not resume after the last event (history gone): reset to the full list, %d instances at revision %d\n", len(l.Instances), l.Revision)
				runner.trigger()
			case client.EventList, client.EventRegister, client.EventUpdate, client.EventDeregister, client.EventExpire:
				runner.trigger()
			}
		})
	} else {
		enc := json.NewEncoder(c.env.Stdout)
		enc.SetEscapeHTML(false)
		d.OnEvent(func(ev client.Event) {
			if c.output == "json" {
				_ = enc.Encode(eventJSON{Event: ev.Type, ID: ev.ID, Data: ev.Data})
				return
			}
			fmt.Fprintln(c.env.Stdout, eventLine(ev))
		})
	}
	sctx, cancel := c.withTimeout(ctx, 0)
	err = d.Start(sctx)
	cancel()
	if err != nil {
		d.Close()
		if ctx.Err() != nil {
			return nil // interrupted before the first list
		}
		return err
	}
	if runner != nil {
		go runner.loop(ctx)
	}
	<-ctx.Done()
	d.Close()
	if runner != nil {
		<-runner.done
	}
	return nil
}

// execRunner runs CMD once per change, never twice at a time: a change
// while CMD runs marks the list dirty (one slot, so a burst of changes is
// one mark), and the next run reads the list as it is then.
type execRunner struct {
	cmdline string
	env     Env
	list    func() client.InstanceList
	dirty   chan struct{} // one slot: a change since the last run began
	done    chan struct{} // closed when loop returns
}

func newExecRunner(cmdline string, env Env, list func() client.InstanceList) *execRunner {
	return &execRunner{cmdline: cmdline, env: env, list: list, dirty: make(chan struct{}, 1), done: make(chan struct{})}
}

// trigger marks a change; it never blocks.
func (r *execRunner) trigger() {
	select {
	case r.dirty <- struct{}{}:
	default: // a run is already due: it will read the latest list
	}
}

// loop runs CMD after each mark until ctx ends; a run in progress is
// finished first.
func (r *execRunner) loop(ctx context.Context) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.dirty:
		}
		if ctx.Err() != nil {
			return
		}
		r.run()
	}
}

func (r *execRunner) run() {
	body, err := json.Marshal(r.list())
	if err != nil {
		fmt.Fprintf(r.env.Stderr, "regd watch: --exec: %v\n", err)
		return
	}
	cmd := exec.Command("sh", "-c", r.cmdline)
	cmd.Stdin = bytes.NewReader(append(body, '\n'))
	cmd.Stdout, cmd.Stderr = r.env.Stdout, r.env.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(r.env.Stderr, "regd watch: --exec %q: %v\n", r.cmdline, err)
	}
}

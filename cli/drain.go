package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/regd/regd/client"
)

// DefaultDrainWait is drain's --wait: a drain is there to be waited for.
const DefaultDrainWait = 30 * time.Second

func init() {
	register(&command{
		name:    "drain",
		summary: "take an instance out of discovery, still registered; wait until every watcher saw it",
		usage: `Usage:
  regd drain SERVICE ID [--wait 30s] [--strict]

Sets the instance's status to draining (PATCH, in place: its lease,
heartbeats and address stay). Lists, watch streams, DNS and the other
discovery views stop showing it, so clients stop sending it new work. The
command waits (--wait, default 30s, at most 60s) until every watch stream
and blocking query of the service on every member has been sent the change
-- the drain handshake -- and prints how many had it: then the process can
stop without guessed sleeps. If the wait ends first, it says so on stderr
and exits 0 (1 with --strict). 'regd undrain' brings the instance back.`,
		setup: func(fs *flag.FlagSet, c *call) {
			h := &handshakeFlags{}
			h.bind(fs, DefaultDrainWait)
			c.extra = h
		},
		run: func(ctx context.Context, c *call, args []string) error {
			return setStatus(ctx, c, args, "drain", client.StatusDraining, "Drained")
		},
	})
	register(&command{
		name:    "undrain",
		summary: "put a drained instance back into discovery (status up)",
		usage: `Usage:
  regd undrain SERVICE ID [--wait D] [--strict]

Sets the instance's status back to up (PATCH, in place). With --wait, the
answer waits until every subscriber of the service has been sent the change
(the drain handshake), and says how many.`,
		setup: func(fs *flag.FlagSet, c *call) {
			h := &handshakeFlags{}
			h.bind(fs, 0)
			c.extra = h
		},
		run: func(ctx context.Context, c *call, args []string) error {
			return setStatus(ctx, c, args, "undrain", client.StatusUp, "Undrained")
		},
	})
}

func setStatus(ctx context.Context, c *call, args []string, name, status, done string) error {
	h := c.extra.(*handshakeFlags)
	if err := h.check(name, args); err != nil {
		return err
	}
	ctx, cancel, cl, err := c.oneShot(ctx, h.wait)
	defer cancel()
	if err != nil {
		return err
	}
	in, obs, err := cl.SetStatus(ctx, args[0], args[1], status, h.wait)
	if err != nil {
		return err
	}
	return h.finish(c, changeResult{Service: in.Service, ID: in.ID, Instance: &in}, obs, fmt.Sprintf("%s %s/%s", done, in.Service, in.ID))
}

package cli

import (
	"context"
	"flag"
	"fmt"
)

func init() {
	register(&command{
		name:    "deregister",
		summary: "deregister an instance now (never reported as an expiry)",
		usage: `Usage:
  regd deregister SERVICE ID [--wait D] [--strict]

Removes the instance at once (DELETE): watchers see a deregister event, and
it is never reported as an expiry. An instance regd does not know is an
error (exit 1). With --wait, the answer waits until every subscriber of the
service has been sent the removal (the drain handshake), and says how many.`,
		setup: func(fs *flag.FlagSet, c *call) {
			h := &handshakeFlags{}
			h.bind(fs, 0)
			c.extra = h
		},
		run: func(ctx context.Context, c *call, args []string) error {
			h := c.extra.(*handshakeFlags)
			if err := h.check("deregister", args); err != nil {
				return err
			}
			ctx, cancel, cl, err := c.oneShot(ctx, h.wait)
			defer cancel()
			if err != nil {
				return err
			}
			obs, err := cl.DeregisterKnown(ctx, args[0], args[1], h.wait)
			if err != nil {
				return err
			}
			return h.finish(c, changeResult{Service: args[0], ID: args[1]}, obs, fmt.Sprintf("Deregistered %s/%s", args[0], args[1]))
		},
	})
}

package cli

import (
	"context"
	"flag"
	"io"
)

type expirationsFlags struct {
	service string
	limit   int
}

func init() {
	register(&command{
		name:    "expirations",
		summary: "the expiry reports, newest first",
		usage: `Usage:
  regd expirations [--service S] [--limit N]

The instances whose lease ran out (heartbeats stopped, or a health check run
by the registry failed), newest first, each reported once by the leader of
the moment: when, which instance, the cause and the reporting member.
Deregistrations are never listed. -w json prints GET /v1/expirations.`,
		setup: func(fs *flag.FlagSet, c *call) {
			f := &expirationsFlags{}
			fs.StringVar(&f.service, "service", "", "only this `service`'s reports")
			fs.IntVar(&f.limit, "limit", 0, "at most `N` reports (default regd's, 100; regd caps it at 10000)")
			c.extra = f
		},
		run: func(ctx context.Context, c *call, args []string) error {
			f := c.extra.(*expirationsFlags)
			if len(args) != 0 {
				return usagef("expirations takes no arguments (--service S picks one service)")
			}
			if f.limit < 0 {
				return usagef("--limit %d: must not be negative", f.limit)
			}
			ctx, cancel, cl, err := c.oneShot(ctx, 0)
			defer cancel()
			if err != nil {
				return err
			}
			l, err := cl.Expirations(ctx, f.service, f.limit)
			if err != nil {
				return err
			}
			return c.print(l, func(w io.Writer) { printExpirations(w, l) })
		},
	})
}

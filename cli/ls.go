package cli

import (
	"context"
	"flag"
	"io"

	"github.com/regd/regd/client"
)

type lsFlags struct {
	status string
	meta   metaFlag
}

func init() {
	register(&command{
		name:    "ls",
		summary: "list the services, or one service's instances",
		usage: `Usage:
  regd ls                        the services: how many instances each has, and how many are up
  regd ls SERVICE [--status S] [--meta key=value]...
                                 the service's instances, sorted by id: id, address, status,
                                 weight, TTL, registered_at, metadata

A service's list shows its up instances, as discovery does (DNS, watch
streams, blocking queries); --status draining, out_of_service or up picks
one status, --status any shows them all. --meta key=value (repeatable) keeps
the instances whose metadata has every pair. -w json prints regd's answer:
GET /v1/services, or GET /v1/services/SERVICE/instances with the filters.`,
		setup: func(fs *flag.FlagSet, c *call) {
			f := &lsFlags{meta: metaFlag{}}
			fs.StringVar(&f.status, "status", "", "SERVICE: only instances with this `status` (up, draining, out_of_service), or any (default up)")
			fs.Var(f.meta, "meta", "SERVICE: only instances whose metadata has `key=value` (repeatable; all must match)")
			c.extra = f
		},
		run: runLs,
	})
}

func runLs(ctx context.Context, c *call, args []string) error {
	f := c.extra.(*lsFlags)
	if len(args) > 1 {
		return usagef("ls takes at most one SERVICE")
	}
	if len(args) == 0 && (f.status != "" || len(f.meta) > 0) {
		return usagef("--status and --meta filter one service's instances: regd ls SERVICE --status ...")
	}
	if err := checkStatus("status", f.status, true); err != nil {
		return err
	}
	ctx, cancel, cl, err := c.oneShot(ctx, 0)
	defer cancel()
	if err != nil {
		return err
	}
	if len(args) == 0 {
		l, err := cl.Services(ctx)
		if err != nil {
			return err
		}
		return c.print(l, func(w io.Writer) { printServices(w, l) })
	}
	l, err := cl.Instances(ctx, args[0], client.ListOptions{Status: f.status, Metadata: f.meta})
	if err != nil {
		return err
	}
	return c.print(l, func(w io.Writer) { printInstances(w, l) })
}

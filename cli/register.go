package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/regd/regd/client"
)

type registerFlags struct {
	ttl    int
	weight intFlag
	status string
	meta   metaFlag
	check  checkFlags
}

func init() {
	register(&command{
		name:    "register",
		summary: "register an instance once (nothing heartbeats it: see regd run)",
		usage: `Usage:
  regd register SERVICE ID ADDRESS [--ttl N] [--weight N] [--status S] [--meta key=value]...
                [--check-http URL | --check-tcp HOST:PORT | --check-grpc HOST:PORT[/SVC]]
                [--check-interval D] [--check-timeout D] [--check-failures N]

Registers instance ID of SERVICE at ADDRESS (host:port), or registers it
again (a new lease; the answer says whether it replaced a live one). Nothing
heartbeats it afterwards: it expires after its TTL, and the leader reports
the expiry, unless something renews it (PUT .../heartbeat). 'regd run' keeps
an instance alive for as long as a command runs.

With a --check-* flag regd itself keeps the instance alive while the check
passes (a database, a program nobody will change): no heartbeats are needed,
the TTL defaults to what the check needs, and after --check-failures failed
probes in a row regd removes the instance and reports its expiry with cause
check_failed. -w json prints regd's answer, the instance.`,
		setup: func(fs *flag.FlagSet, c *call) {
			f := &registerFlags{meta: metaFlag{}}
			fs.IntVar(&f.ttl, "ttl", 0, "the lease's TTL in whole `seconds`, 2–3600 (default regd's, 10)")
			fs.Var(&f.weight, "weight", "relative share of traffic, `0-10000` (default regd's, 100)")
			fs.StringVar(&f.status, "status", "", "up, draining or out_of_service (default up)")
			fs.Var(f.meta, "meta", "metadata `key=value` (repeatable)")
			f.check.add(fs)
			c.extra = f
		},
		run: runRegister,
	})
}

func runRegister(ctx context.Context, c *call, args []string) error {
	f := c.extra.(*registerFlags)
	if len(args) != 3 {
		return usagef("register needs SERVICE ID ADDRESS")
	}
	if err := checkStatus("status", f.status, false); err != nil {
		return err
	}
	check, err := f.check.check()
	if err != nil {
		return err
	}
	ctx, cancel, cl, err := c.oneShot(ctx, 0)
	defer cancel()
	if err != nil {
		return err
	}
	in, created, err := cl.Register(ctx, args[0], args[1], client.Registration{
		Address: args[2], TTL: f.ttl, Weight: f.weight.ptr(), Status: f.status, Metadata: f.meta, Check: check,
	})
	if err != nil {
		return err
	}
	return c.print(in, func(w io.Writer) {
		what := "Registered"
		if !created {
			what = "Registered again"
		}
		fmt.Fprintf(w, "%s %s/%s at %s: status %s, weight %d, TTL %s, lease %s, revision %d.\n",
			what, in.Service, in.ID, in.Address, in.Status, in.Weight, ttlString(in.TTL), in.LeaseID, in.Revision)
	})
}

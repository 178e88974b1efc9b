package cli

import (
	"context"
	"fmt"
	"io"
)

func init() {
	register(&command{
		name:    "export",
		summary: "every instance of the registry at one revision (GET /v1/export)",
		usage: `Usage:
  regd export [-w json]

Prints every instance, sorted by service then id, read at one revision. With
-w json the output is GET /v1/export's answer: a backup in JSON that scripts
and other registries can read (a snapshot is what regd restores from).`,
		run: func(ctx context.Context, c *call, args []string) error {
			if len(args) != 0 {
				return usagef("export takes no arguments")
			}
			a, err := c.admin()
			if err != nil {
				return err
			}
			ctx, cancel := c.withTimeout(ctx, 0)
			defer cancel()
			ex, err := a.Export(ctx)
			if err != nil {
				return err
			}
			return c.print(ex, func(w io.Writer) {
				tw := newTable(w)
				fmt.Fprintln(tw, "SERVICE\tID\tADDRESS\tTTL\tMETADATA")
				for _, in := range ex.Instances {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", in.Service, in.ID, in.Address, in.TTL, orDash(metaString(in.Metadata)))
				}
				tw.Flush()
				fmt.Fprintf(w, "%d instances at revision %d\n", len(ex.Instances), ex.Revision)
			})
		},
	})
}

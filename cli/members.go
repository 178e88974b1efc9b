package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/regd/regd/client"
)

func init() {
	register(&command{
		name:    "members",
		summary: "list the cluster's members; add, promote or remove one (admin token)",
		usage: `Usage:
  regd members                              list the members (GET /v1/cluster)
  regd members add NAME PEER_URL [--learner] announce a member and print how to start it
  regd members promote ID                    make a learner a voting member
  regd members remove ID                     remove a member (refused, 409, if the cluster would lose its quorum)

PEER_URL may list several URLs, comma-separated. ID is the member's ID in hex,
as 'regd members' shows it. Adding, promoting and removing need an admin token.
Replacing a dead member: remove it, add its successor as a learner, start it
with the printed flags, promote it (docs/operations.md).`,
		setup: func(fs *flag.FlagSet, c *call) {
			learner := new(bool)
			fs.BoolVar(learner, "learner", false, "members add: add a non-voting learner, to promote once it has caught up (the safe way)")
			c.extra = learner
		},
		run: runMembers,
	})
}

func runMembers(ctx context.Context, c *call, args []string) error {
	ctx, cancel := c.withTimeout(ctx, 0)
	defer cancel()
	if len(args) == 0 {
		return membersList(ctx, c)
	}
	a, err := c.admin()
	if err != nil {
		return err
	}
	switch verb := args[0]; {
	case verb == "add" && len(args) == 3:
		added, err := a.AddMember(ctx, client.MemberAdd{Name: args[1], PeerURLs: splitList(args[2]), Learner: *c.extra.(*bool)})
		if err != nil {
			return err
		}
		return c.print(added, func(w io.Writer) { printAdded(w, added) })
	case verb == "promote" && len(args) == 2:
		m, err := a.PromoteMember(ctx, args[1])
		if err != nil {
			return err
		}
		return c.print(m, func(w io.Writer) { fmt.Fprintf(w, "Promoted member %s (ID %s) to a voting member.\n", m.Name, m.ID) })
	case verb == "remove" && len(args) == 2:
		if err := a.RemoveMember(ctx, args[1]); err != nil {
			return err
		}
		return c.print(map[string]string{"removed": args[1]}, func(w io.Writer) { fmt.Fprintf(w, "Removed member %s.\n", args[1]) })
	case verb == "add" || verb == "promote" || verb == "remove":
		return usagef("members %s: wrong number of arguments", verb)
	default:
		return usagef("members: unknown action %q (add, promote or remove)", verb)
	}
}

func membersList(ctx context.Context, c *call) error {
	a, err := c.admin()
	if err != nil {
		return err
	}
	st, err := a.Cluster(ctx)
	if err != nil {
		return err
	}
	return c.print(st, func(w io.Writer) {
		tw := newTable(w)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tPEER URLS\tCLIENT URLS")
		for _, m := range st.Members {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, orDash(m.Name), role(m), strings.Join(m.PeerURLs, ","), orDash(strings.Join(m.ClientURLs, ",")))
		}
		tw.Flush()
		for _, al := range st.Alarms {
			fmt.Fprintf(w, "alarm: %s\n", al)
		}
	})
}

func role(m client.Member) string {
	switch {
	case m.Name == "":
		return "not started"
	case m.IsLeader:
		return "leader"
	case m.IsLearner:
		return "learner"
	}
	return "follower"
}

func printAdded(w io.Writer, a client.MemberAdded) {
	kind := "voting member"
	if a.Member.IsLearner {
		kind = "learner"
	}
	fmt.Fprintf(w, "Added member %s (ID %s) as a %s. Start it with its own addresses in place of <...>:\n\n  regd", a.Member.Name, a.Member.ID, kind)
	for _, f := range a.Flags {
		fmt.Fprintf(w, " \\\n    %s", f)
	}
	fmt.Fprintln(w)
	if a.Member.IsLearner {
		fmt.Fprintf(w, "\nThen, once it has caught up: regd members promote %s\n", a.Member.ID)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

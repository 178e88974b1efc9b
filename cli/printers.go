package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/regd/regd/client"
)

// The -w table printers. With -w json a command prints regd's answer (or,
// where it makes several requests, a small object of them) instead; these
// are for people, and may change.

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func printServices(w io.Writer, l client.ServiceList) {
	tw := newTable(w)
	fmt.Fprintln(tw, "SERVICE\tINSTANCES\tUP")
	for _, s := range l.Services {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", s.Name, s.Instances, s.Up)
	}
	tw.Flush()
}

func printInstances(w io.Writer, l client.InstanceList) {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATUS\tWEIGHT\tTTL\tREGISTERED\tMETADATA")
	for _, in := range l.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", in.ID, in.Address, orDash(in.Status), in.Weight,
			ttlString(in.TTL), timeString(in.RegisteredAt), orDash(metaString(in.Metadata)))
	}
	tw.Flush()
}

func printExpirations(w io.Writer, l client.ExpirationList) {
	tw := newTable(w)
	fmt.Fprintln(tw, "EXPIRED AT\tSERVICE\tID\tADDRESS\tCAUSE\tREPORTED BY\tOUTPUT")
	for _, x := range l.Expirations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", timeString(x.ExpiredAt), x.Service, x.ID, x.Address,
			orDash(x.Cause), x.ReportedBy, orDash(oneLine(x.Output, 60)))
	}
	tw.Flush()
}

// eventLine is one event of `regd watch` as a line of text: the event's
// type and id, then the instance (id, address, status, weight, metadata),
// or for a list or reset how many instances it holds and their ids.
func eventLine(ev client.Event) string {
	switch ev.Type {
	case client.EventList, client.EventReset:
		var l client.InstanceList
		if err := json.Unmarshal(ev.Data, &l); err != nil {
			return fmt.Sprintf("%-10s %-12s %s", ev.Type, ev.ID, oneLine(string(ev.Data), 200))
		}
		ids := make([]string, len(l.Instances))
		for i, in := range l.Instances {
			ids[i] = in.ID
		}
		if len(ids) == 0 {
			return fmt.Sprintf("%-10s %-12s 0 instances", ev.Type, ev.ID)
		}
		return fmt.Sprintf("%-10s %-12s %d instances: %s", ev.Type, ev.ID, len(ids), strings.Join(ids, " "))
	}
	var in client.Instance
	if err := json.Unmarshal(ev.Data, &in); err != nil || in.ID == "" {
		return fmt.Sprintf("%-10s %-12s %s", ev.Type, ev.ID, oneLine(string(ev.Data), 200))
	}
	return strings.TrimRight(fmt.Sprintf("%-10s %-12s %s %s %s weight=%d %s", ev.Type, ev.ID, in.ID, in.Address,
		orDash(in.Status), in.Weight, metaString(in.Metadata)), " ")
}

// eventJSON is one event of `regd watch -w json`: one object per line.
type eventJSON struct {
	Event string          `json:"event"`
	ID    string          `json:"id"`
	Data  json.RawMessage `json:"data"`
}

// observedJSON is a drain handshake's outcome in -w json output.
type observedJSON struct {
	Delivered   int  `json:"delivered"`
	Subscribers int  `json:"subscribers"`
	Answered    int  `json:"members_answered"`
	Members     int  `json:"members"`
	Complete    bool `json:"complete"`
}

func observedOf(o client.Observed) *observedJSON {
	return &observedJSON{o.Delivered, o.Subscribers, o.Acked, o.Members, o.Complete()}
}

// metaString is metadata as "k=v,k=v", sorted by key.
func metaString(md map[string]string) string {
	kv := make([]string, 0, len(md))
	for _, k := range slices.Sorted(maps.Keys(md)) {
		kv = append(kv, k+"="+md[k])
	}
	return strings.Join(kv, ",")
}

func ttlString(ttl int64) string {
	if ttl <= 0 {
		return "-" // a key a plain etcd client wrote without a lease
	}
	return fmt.Sprintf("%ds", ttl)
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine cuts s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

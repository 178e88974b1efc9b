package cli

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/regd/regd/client"
)

// handshakeFlags are the drain handshake's flags of deregister, drain and
// undrain: --wait (regd's ?wait_observed, which it caps at 60 s) and
// --strict.
type handshakeFlags struct {
	wait   time.Duration
	strict bool
}

func (h *handshakeFlags) bind(fs *flag.FlagSet, def time.Duration) {
	fs.DurationVar(&h.wait, "wait", def, "wait up to this `duration` (regd caps it at 60s) until every watch stream and blocking query of the service, on every member, has been sent the change; 0: answer at once")
	fs.BoolVar(&h.strict, "strict", false, "exit 1 when --wait ended before every subscriber and member had the change (default: exit 0, and say so on stderr)")
}

// check checks the arguments of command name (SERVICE ID) and the flags.
func (h *handshakeFlags) check(name string, args []string) error {
	if len(args) != 2 {
		return usagef("%s needs SERVICE ID", name)
	}
	if h.wait < 0 {
		return usagef("--wait %s: must not be negative", h.wait)
	}
	return nil
}

// changeResult is what deregister, drain and undrain print with -w json.
type changeResult struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	// Instance is the instance after a drain or undrain.
	Instance *client.Instance `json:"instance,omitempty"`
	// Observed is the handshake's outcome, with --wait.
	Observed *observedJSON `json:"observed,omitempty"`
}

// finish prints the result and decides the exit: a handshake that ended
// short is said on stderr; with --strict it exits 1.
func (h *handshakeFlags) finish(c *call, r changeResult, obs client.Observed, table string) error {
	if h.wait > 0 {
		r.Observed = observedOf(obs)
		table += fmt.Sprintf(": %s had the change", obs)
	}
	if err := c.print(r, func(w io.Writer) { fmt.Fprintln(w, table+".") }); err != nil {
		return err
	}
	if h.wait > 0 && !obs.Complete() {
		fmt.Fprintf(c.env.Stderr, "regd: --wait %s ended before every subscriber and member had the change (%s)\n", h.wait, obs)
		if h.strict {
			return exitCode(ExitFailed)
		}
	}
	return nil
}

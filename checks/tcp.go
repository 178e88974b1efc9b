package checks

import "context"

// probeTCP connects to target (host:port): passing when the connection is
// accepted. The connection is closed at once, nothing is sent.
func (p *Prober) probeTCP(ctx context.Context, target string) Result {
	conn, err := p.dial(ctx, "tcp", target)
	if err != nil {
		return Result{Output: "TCP connect " + target + ": " + describe(ctx, err)}
	}
	conn.Close()
	return Result{Passing: true, Output: "TCP connect " + target + ": success"}
}

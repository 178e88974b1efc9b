package checks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// probeHTTP GETs target: passing on a 2xx answer. The output is the status
// line and the start of the body; the body is read up to the output's
// limit, never further (the connection is closed then, not drained).
func (p *Prober) probeHTTP(ctx context.Context, target string) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return Result{Output: "HTTP GET " + target + ": " + err.Error()}
	}
	req.Header.Set("User-Agent", p.ua)
	req.Header.Set("Accept", "text/plain, application/json, */*")
	resp, err := p.http.Do(req)
	if err != nil {
		// url.Error repeats the method and URL: keep the cause only.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return Result{Output: "HTTP GET " + target + ": " + describe(ctx, err)}
	}
	defer resp.Body.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP GET %s: %s", target, resp.Status)
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		fmt.Fprintf(&b, " (redirect to %s not followed: redirects are followed on the target's host only)", loc)
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, int64(p.maxOutput)))
	if len(body) > 0 {
		b.WriteString("\n")
		b.Write(body)
	}
	if rerr != nil && len(body) == 0 {
		fmt.Fprintf(&b, " (reading the body: %s)", describe(ctx, rerr))
	}
	return Result{Passing: resp.StatusCode >= 200 && resp.StatusCode < 300, Output: b.String()}
}

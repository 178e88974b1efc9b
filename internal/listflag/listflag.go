// Package listflag reads flag values that are comma-separated lists
// (--endpoints a,b; --peer-urls; regd-bench's --targets), the one way the
// regd CLI and regd-bench split them.
package listflag

import "strings"

// Split is s's comma-separated elements with the spaces around each
// trimmed; empty elements are dropped, so "a, b,,c," is [a b c] and "" is
// nil.
func Split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

package listflag_test

import (
	"slices"
	"testing"

	"github.com/regd/regd/internal/listflag"
)

func TestSplit(t *testing.T) {
	for in, want := range map[string][]string{
		"":                  nil,
		" , ,":              nil,
		"a":                 {"a"},
		"a, b,,c,":          {"a", "b", "c"},
		" http://x:1 ,y:2 ": {"http://x:1", "y:2"},
	} {
		if got := listflag.Split(in); !slices.Equal(got, want) {
			t.Errorf("Split(%q) = %q, want %q", in, got, want)
		}
	}
}

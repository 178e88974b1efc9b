package cli

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// metaFlag is a repeatable --meta key=value flag.
type metaFlag map[string]string

func (m metaFlag) String() string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kv = append(kv, k+"="+m[k])
	}
	return strings.Join(kv, ",")
}

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value")
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	m[k] = val
	return nil
}

// intFlag is an int flag that knows whether it was given, so that regd's
// default applies when it was not (--weight 0 is a weight).
type intFlag struct {
	v   int
	set bool
}

func (f *intFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.Itoa(f.v)
}

func (f *intFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a whole number")
	}
	f.v, f.set = n, true
	return nil
}

// ptr is the value, or nil when the flag was not given.
func (f *intFlag) ptr() *int {
	if !f.set {
		return nil
	}
	v := f.v
	return &v
}

// validStatuses are the instance statuses (the contract's lifecycle).
var validStatuses = []string{"up", "draining", "out_of_service"}

// checkStatus checks a --status flag; allowAny admits "any" (lists).
func checkStatus(flag, s string, allowAny bool) error {
	if s == "" || slices.Contains(validStatuses, s) || allowAny && s == "any" {
		return nil
	}
	want := strings.Join(validStatuses, ", ")
	if allowAny {
		want += " or any"
	}
	return usagef("--%s %q: want %s", flag, s, want)
}

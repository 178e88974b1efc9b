package main

import (
	"net/netip"
	"strings"

	"github.com/regd/regd/checks"
)

// cidrsValue is --check-allowed-cidrs: the networks the registry's health
// checks may connect to (checks.ParseCIDRs).
type cidrsValue struct{ dst *[]netip.Prefix }

func newCIDRs(dst *[]netip.Prefix, def []netip.Prefix) *cidrsValue {
	*dst = def
	return &cidrsValue{dst}
}

func (v *cidrsValue) Get() any { return v.String() }
func (v *cidrsValue) String() string {
	if v == nil || v.dst == nil {
		return ""
	}
	s := make([]string, len(*v.dst))
	for i, p := range *v.dst {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (v *cidrsValue) Set(list string) error {
	p, err := checks.ParseCIDRs(list)
	if err != nil {
		return err
	}
	*v.dst = p
	return nil
}

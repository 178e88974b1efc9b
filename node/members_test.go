package node_test

import (
	"errors"
	"testing"

	"github.com/regd/regd/node"
)

// TestRemovalRule: the quorum rule of a member removal, case by case.
func TestRemovalRule(t *testing.T) {
	m := func(id uint64, name string, learner bool) node.Member {
		return node.Member{ID: id, Name: name, IsLearner: learner}
	}
	three := []node.Member{m(1, "m1", false), m(2, "m2", false), m(3, "m3", false)}
	all := map[uint64]bool{1: true, 2: true, 3: true, 4: true}
	tests := []struct {
		name    string
		ms      []node.Member
		remove  uint64
		up      map[uint64]bool
		refused bool
	}{
		{"healthy three, remove one", three, 3, all, false},
		{"m3 dead, remove m3 (replacing a dead member)", three, 3, map[uint64]bool{1: true, 2: true}, false},
		{"m3 dead, remove m2: one of two left up", three, 2, map[uint64]bool{1: true, 2: true}, true},
		{"the last voter", []node.Member{m(1, "m1", false), m(2, "m2", true)}, 1, all, true},
		{"a learner does not count", []node.Member{m(1, "m1", false), m(2, "m2", false), m(4, "m4", true)}, 2, map[uint64]bool{1: true, 4: true}, false},
		{"a voter added but never started is down", []node.Member{m(1, "m1", false), m(2, "m2", false), m(3, "", false)}, 2, all, true},
		{"remove the never-started voter", []node.Member{m(1, "m1", false), m(2, "m2", false), m(3, "", false)}, 3, all, false},
		{"two of four down: removing an up one", []node.Member{m(1, "m1", false), m(2, "m2", false), m(3, "m3", false), m(4, "m4", false)}, 1, map[uint64]bool{1: true, 2: true}, true},
		{"one of four down: removing an up one leaves two of three", []node.Member{m(1, "m1", false), m(2, "m2", false), m(3, "m3", false), m(4, "m4", false)}, 1, map[uint64]bool{1: true, 2: true, 3: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := node.RemovalRule(tc.ms, tc.remove, tc.up)
			var me *node.MembershipError
			switch {
			case tc.refused && (!errors.As(err, &me) || me.Reason != node.ReasonQuorum):
				t.Fatalf("err %v, want a quorum refusal", err)
			case !tc.refused && err != nil:
				t.Fatalf("err %v, want the removal allowed", err)
			}
		})
	}
}

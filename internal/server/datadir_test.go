package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareDataDir(t *testing.T) {
	t.Run("new nested dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		if err := PrepareDataDir(dir); err != nil {
			t.Fatalf("PrepareDataDir: %v", err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("probe file left behind: %v", entries)
		}
	})

	t.Run("existing dir", func(t *testing.T) {
		if err := PrepareDataDir(t.TempDir()); err != nil {
			t.Fatalf("PrepareDataDir: %v", err)
		}
	})

	t.Run("empty", func(t *testing.T) {
		if err := PrepareDataDir(""); err == nil || err.Error() != "must not be empty" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("path is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := PrepareDataDir(f)
		if err == nil || !strings.HasPrefix(err.Error(), "not writable: ") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("err = %v", err)
		}
	})

	for _, sub := range []string{"", "child"} {
		name := "read-only dir"
		if sub != "" {
			name = "under read-only dir"
		}
		t.Run(name, func(t *testing.T) {
			ro := t.TempDir()
			if err := os.Chmod(ro, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(ro, 0o700) })
			// Root (and some file systems) ignore permission bits.
			if f, err := os.CreateTemp(ro, "probe"); err == nil {
				f.Close()
				os.Remove(f.Name())
				t.Skip("read-only directory is writable here (running as root?)")
			}
			err := PrepareDataDir(filepath.Join(ro, sub))
			if err == nil {
				t.Fatal("PrepareDataDir succeeded on a read-only location")
			}
			if !strings.HasPrefix(err.Error(), "not writable: ") {
				t.Errorf("err = %q, want prefix %q", err, "not writable: ")
			}
		})
	}
}

func TestHasMember(t *testing.T) {
	dir := t.TempDir()
	if HasMember(dir) || HasMember(filepath.Join(dir, "missing")) {
		t.Fatal("HasMember on a dir without member/")
	}
	if err := os.WriteFile(filepath.Join(dir, "member"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if HasMember(dir) {
		t.Fatal("HasMember with member/ a file")
	}
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "member"), 0o700); err != nil {
		t.Fatal(err)
	}
	if !HasMember(dir) {
		t.Fatal("HasMember false on a dir with member/")
	}
}

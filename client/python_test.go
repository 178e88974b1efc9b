package client_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/regd/regd/internal/regdtest"
)

// repoRoot is the module root: the parent of this file's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Dir(filepath.Dir(file))
}

// TestPythonExample compiles the Python example client and runs its tests
// against a one-node cluster.
func TestPythonExample(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH; skipping the Python example's tests")
	}
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	files, err := filepath.Glob(filepath.Join(root, "examples", "python", "*.py"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Python files under examples/python (%v)", err)
	}
	compile := exec.CommandContext(ctx, python, append([]string{"-m", "py_compile"}, files...)...)
	compile.Dir = root
	compile.Env = append(compile.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONPYCACHEPREFIX="+t.TempDir())
	if out, err := compile.CombinedOutput(); err != nil {
		t.Fatalf("py_compile: %v\n%s", err, out)
	}

	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	cmd := exec.CommandContext(ctx, python, filepath.Join("examples", "python", "test_regd.py"))
	cmd.Dir = root
	cmd.Env = append(cmd.Environ(), "REGD_URL="+c.Members[0].URL(""), "PYTHONDONTWRITEBYTECODE=1")
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("test_regd.py did not finish within 60 s:\n%s", out)
	}
	if err != nil {
		t.Fatalf("test_regd.py failed (%v):\n%s", err, out)
	}
	t.Logf("test_regd.py passed in %s", time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

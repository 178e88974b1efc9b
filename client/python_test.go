package client_test

import (
	"bytes"
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
// against a one-node cluster without tokens, and against one that needs
// tokens for reads and writes (then the demo, too, with REGD_TOKEN).
func TestPythonExample(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH; skipping the Python example's tests")
	}
	root := repoRoot(t)

	files, err := filepath.Glob(filepath.Join(root, "examples", "python", "*.py"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Python files under examples/python (%v)", err)
	}
	compile := exec.CommandContext(t.Context(), python, append([]string{"-m", "py_compile"}, files...)...)
	compile.Dir = root
	compile.Env = append(compile.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONPYCACHEPREFIX="+t.TempDir())
	if out, err := compile.CombinedOutput(); err != nil {
		t.Fatalf("py_compile: %v\n%s", err, out)
	}

	skipShort(t)
	t.Run("open", func(t *testing.T) {
		t.Parallel()
		c := regdtest.StartCluster(t, 1)
		runPython(t, python, root, []string{"test_regd.py"}, "REGD_URL="+c.Members[0].URL(""))
	})
	t.Run("tokens", func(t *testing.T) {
		t.Parallel()
		c, _ := authCluster(t, true)
		url := c.Members[0].URL("")
		runPython(t, python, root, []string{"test_regd.py"},
			"REGD_URL="+url, "REGD_TOKEN="+writeToken, "REGD_READ_TOKEN="+readToken)
		out := runPython(t, python, root, []string{"example.py", url}, "REGD_TOKEN="+writeToken)
		if !bytes.Contains(out, []byte("registered demo/py-1")) || !bytes.Contains(out, []byte("deregistered demo/py-1")) {
			t.Errorf("example.py did not register and deregister:\n%s", out)
		}
	})
}

// runPython runs examples/python/<args[0]> with the rest of args, from the
// module root with env added, and returns its output; it fails the test
// when the script fails or takes over 60 s.
func runPython(t *testing.T, python, root string, args []string, env ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	script := args[0]
	args = append([]string{filepath.Join("examples", "python", script)}, args[1:]...)
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = root
	cmd.Env = append(append(cmd.Environ(), "PYTHONDONTWRITEBYTECODE=1"), env...)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%s did not finish within 60 s:\n%s", script, out)
	}
	if err != nil {
		t.Fatalf("%s failed (%v):\n%s", script, err, out)
	}
	t.Logf("%s passed in %s", script, time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Logf("%s", out)
	}
	return out
}

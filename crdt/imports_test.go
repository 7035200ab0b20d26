package crdt_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The crdt package is pure: no I/O, no clock, no randomness, no network,
// nothing outside the standard library. This test reads the imports of its
// non-test files and fails on anything outside the allowlist.

var allowedImports = []string{
	"bytes", "cmp", "crypto/ed25519", "crypto/sha256", "encoding/binary", "encoding/hex",
	"errors", "fmt", "math", "math/bits", "slices", "sort", "strconv", "strings", "sync",
	"unicode/utf8",
}

// deniedImports are named explicitly so that the failure says why.
var deniedImports = map[string]string{
	"os":           "I/O",
	"io":           "I/O",
	"io/fs":        "I/O",
	"bufio":        "I/O",
	"net":          "network",
	"net/http":     "network",
	"time":         "clock (time comes in as HLC values and an injected wall clock)",
	"math/rand":    "randomness",
	"math/rand/v2": "randomness",
	"crypto/rand":  "randomness",
	"syscall":      "system calls",
	"unsafe":       "unsafe",
	"os/exec":      "processes",
	"log":          "I/O",
	"log/slog":     "I/O",
	"runtime":      "runtime dependence",
	"reflect":      "reflection",
	"plugin":       "plugins",
}

func TestImportsArePure(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	seen := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		seen++
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case deniedImports[path] != "":
				t.Errorf("%s imports %q: the crdt package must not do %s", name, path, deniedImports[path])
			case !slices.Contains(allowedImports, path):
				if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
					t.Errorf("%s imports %q: crdt depends on the standard library only", name, path)
				} else {
					t.Errorf("%s imports %q, which is not in the allowlist of imports_test.go", name, path)
				}
			}
		}
	}
	if seen < 5 {
		t.Fatalf("only %d non-test files found: is the test running in crdt/?", seen)
	}
}
